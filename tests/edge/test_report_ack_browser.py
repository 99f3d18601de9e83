"""The township technician acknowledges a 危急值 report on the edge's page, in a real
browser: the county (uvicorn on PostgreSQL and S3) signs a critical report, the edge's
pickup fetches it, the technician logs in with their county account (cached at the edge),
the page raises the 危急值 banner until they click 确认已阅, and the county records which
technician acknowledged it and when.
Screenshots: test-artifacts/screenshots/edge-report-critical-zh, edge-report-acknowledged-zh."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import httpx
from sqlalchemy import select

from relay.config import Settings
from relay.county.db.models import ReportDelivery, Study, StudyTransition
from relay.county.reports.verification import verify_file
from relay.edge.acks import AckJournal, start_delivery
from relay.edge.admission import Alarms
from relay.edge.http import county_client
from relay.edge.report_pickup import deliver_round
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from relay.edge.technicians import TechnicianCache, sync_once
from tests.browser import chromium, screenshot_path
from tests.county.test_delivery import SITE_TECHNICIAN, signed_study, site_token
from tests.county.test_dicomweb import server  # noqa: F401 - the county under uvicorn
from tests.edge.helpers import wait_until
from tests.edge.techpage import log_in_browser

BANNER = "危急值报告！请立即查看并确认。"


def test_the_technician_acknowledges_a_critical_report_and_the_county_records_who_and_when(
    server: str, county, edge_settings: Settings, spool: Spool, tmp_path: Path,  # noqa: F811
) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        uid = signed_study(client, county, critical=True)
        published = client.get("/api/signing-keys").json()
    token = site_token(county)["Authorization"].removeprefix("Bearer ")
    settings = edge_settings.model_copy(update={"county_url": server, "edge_site_token": token})
    technicians = TechnicianCache(spool.root)
    with county_client(settings) as edge:
        assert deliver_round(edge, settings, []) == 1  # no township PACS here: the page is the destination
        sync_once(edge, technicians)
    acks = AckJournal(spool.root)
    page_server = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0,
                             timezone="Asia/Shanghai", settings=settings, technicians=technicians, acks=acks)
    page_server.start()
    stop = threading.Event()
    sender = start_delivery(settings, acks, stop)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            base = f"http://127.0.0.1:{page_server.port}"
            log_in_browser(page, base, SITE_TECHNICIAN)
            assert page.locator(".alarm.critical").inner_text().strip() == f"⚠ {BANNER}"
            row = page.locator("table.reports tr", has_text=uid)
            assert "危急值" in row.inner_text() and "dr.wang" in row.inner_text()
            pdf = page.request.get(base + (row.get_by_role("link", name="查看/打印").get_attribute("href") or ""))
            assert pdf.headers["content-type"] == "application/pdf"
            (tmp_path / "printed.pdf").write_bytes(pdf.body())
            assert verify_file(path=tmp_path / "printed.pdf", public_keys=published).report.document["critical"]
            page.screenshot(path=str(screenshot_path("edge-report-critical-zh")), full_page=True)

            before = datetime.now(timezone.utc)
            with page.expect_navigation():
                row.get_by_role("button", name="确认已阅").click()
            after = datetime.now(timezone.utc)
            assert page.locator(".alarm.critical").count() == 0
            assert wait_until(lambda: acks.pending() == [], timeout=60)  # the sender delivered it
            page.reload()
            acked = page.locator("table.reports tr", has_text=uid).inner_text()
            assert "已确认" in acked and "待上传" not in acked and SITE_TECHNICIAN in acked
            page.screenshot(path=str(screenshot_path("edge-report-acknowledged-zh")), full_page=True)
    finally:
        stop.set()
        sender.join(30)
        page_server.stop()
    with county.sessions() as s:
        delivery = s.execute(select(ReportDelivery)).scalar_one()
        study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        last = s.execute(select(StudyTransition).where(StudyTransition.study_pk == study.id)
                         .order_by(StudyTransition.id.desc()).limit(1)).scalar_one()
    assert delivery.acknowledged_by == SITE_TECHNICIAN
    assert delivery.acknowledged_at is not None and before <= delivery.acknowledged_at <= after
    assert (study.state, last.state, last.actor) == ("acknowledged", "acknowledged", SITE_TECHNICIAN)

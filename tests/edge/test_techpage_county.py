"""The technician's page with the real county (uvicorn on PostgreSQL and S3): technicians
log in with their county accounts, cached at the edge, also while the county cannot be
reached; a technician of another township cannot; an acknowledgement made with the WAN
down answers the page at once, waits at the edge (已确认（待上传）) across a restart, and
reaches the county once when it is back, audited under the technician's username."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from relay.config import Settings
from relay.county.db.models import AuditEvent, ReportDelivery, StudyTransition
from relay.dicom.vocab import Role
from relay.edge.acks import AckJournal, AckState, deliver_pending, start_delivery
from relay.edge.admission import Alarms
from relay.edge.http import county_client
from relay.edge.report_pickup import deliver_round
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from relay.edge.technicians import TechnicianCache, sync_once
from tests.county.test_delivery import SITE_TECHNICIAN, signed_study, site_token
from tests.county.test_dicomweb import server  # noqa: F401 - the county under uvicorn
from tests.edge.helpers import wait_until
from tests.edge.techpage import PASSWORD, cached_technician, form_token, log_in, logged_in
from tests.factories import make_site, make_user

UNREACHABLE = "http://127.0.0.1:9"
"""The county's address while the WAN is cut: nothing listens there."""


def _edge(edge_settings: Settings, server: str, county) -> tuple[Settings, Settings]:  # noqa: F811
    """The edge's settings with the county reachable, and with the WAN cut."""
    token = site_token(county)["Authorization"].removeprefix("Bearer ")
    up = edge_settings.model_copy(update={"county_url": server, "edge_site_token": token})
    return up, up.model_copy(update={"county_url": UNREACHABLE})


def _page(spool: Spool, settings: Settings, technicians: TechnicianCache, acks: AckJournal) -> StatusPage:
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=settings, technicians=technicians, acks=acks)
    page.start()
    return page


def test_technicians_log_in_from_the_cache_while_the_county_is_down_and_another_sites_cannot(
    server: str, county, edge_settings: Settings, spool: Spool,  # noqa: F811
) -> None:
    make_site(county, "township-a")
    make_site(county, "township-b")
    make_user(county, "tech.b", Role.TECHNICIAN, site="township-b")
    up, down = _edge(edge_settings, server, county)
    cache = TechnicianCache(spool.root)
    with county_client(up) as client:
        assert sync_once(client, cache) is True
        assert sync_once(client, cache) is False  # unchanged: a 304
    with county_client(down) as client, pytest.raises(httpx.ConnectError):
        sync_once(client, cache)  # the WAN is cut: the cached logins stay
    page = _page(spool, down, TechnicianCache(spool.root), AckJournal(spool.root))  # as after a restart
    try:
        base = f"http://127.0.0.1:{page.port}"
        with logged_in(base, SITE_TECHNICIAN, PASSWORD) as client:
            assert SITE_TECHNICIAN in client.get("/").text
        with httpx.Client(base_url=base) as other:
            assert log_in(other, "tech.b", PASSWORD).status_code == 401  # township-b's technician
    finally:
        page.stop()


def test_an_acknowledgement_with_the_county_down_waits_at_the_edge_and_reaches_the_county_once(
    server: str, county, edge_settings: Settings, spool: Spool, tmp_path: Path,  # noqa: F811
) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        uid = signed_study(client, county, critical=True)
    up, down = _edge(edge_settings, server, county)
    cache = TechnicianCache(spool.root)
    with county_client(up) as client:
        assert deliver_round(client, up, []) == 1  # the report is at the edge
        sync_once(client, cache)
    [delivery_id] = [int(p.name) for p in (up.edge_spool_dir / "reports").iterdir()]

    # The WAN is cut: the technician acknowledges; the page answers normally.
    acks = AckJournal(spool.root)
    page = _page(spool, down, cache, acks)
    try:
        with logged_in(f"http://127.0.0.1:{page.port}", SITE_TECHNICIAN) as client:
            html = client.get("/").text
            assert "危急值报告！" in html
            answer = client.post(f"/reports/{delivery_id}/ack", data={"csrf": form_token(html), "lang": "zh"})
            assert answer.status_code == 303
            html = client.get("/").text
            assert "已确认（待上传）" in html and "危急值报告！" not in html
    finally:
        page.stop()
    with county_client(down) as client, pytest.raises(httpx.ConnectError):
        deliver_pending(client, acks)
    [pending] = acks.pending()

    # The edge restarts, still without the WAN: the acknowledgement is still there.
    acks = AckJournal(spool.root)
    page = _page(spool, down, TechnicianCache(spool.root), acks)
    try:
        with logged_in(f"http://127.0.0.1:{page.port}", SITE_TECHNICIAN) as client:
            assert "已确认（待上传）" in client.get("/").text

            # The WAN is back: the background loop delivers it.
            stop = threading.Event()
            sender = start_delivery(up, acks, stop)
            try:
                assert wait_until(lambda: acks.pending() == [], timeout=60)
            finally:
                stop.set()
                sender.join(30)
            html = client.get("/").text
            assert "已确认" in html and "待上传" not in html
    finally:
        page.stop()
    with county_client(up) as client:
        assert deliver_pending(client, acks) == 0  # confirmed: never sent again
    ack = acks.get(delivery_id)
    assert ack is not None and ack.state is AckState.CONFIRMED

    with county.sessions() as s:
        delivery = s.execute(select(ReportDelivery).where(ReportDelivery.id == delivery_id)).scalar_one()
        transitions = s.execute(select(StudyTransition.actor).where(StudyTransition.state == "acknowledged")).all()
        audited = s.execute(select(AuditEvent).where(AuditEvent.action == "report.acknowledge")).scalars().all()
    assert delivery.acknowledged_by == SITE_TECHNICIAN
    assert delivery.acknowledged_at == pending.acknowledged_at  # the technician's time, not the upload's
    assert [t.actor for t in transitions] == [SITE_TECHNICIAN]
    assert [(a.actor, a.object_id) for a in audited] == [(SITE_TECHNICIAN, uid)]


def test_an_acknowledgement_the_county_refuses_is_not_retried_and_says_so(
    server: str, county, edge_settings: Settings, spool: Spool,  # noqa: F811
) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        signed_study(client, county, critical=True)
    up, _ = _edge(edge_settings, server, county)
    with county_client(up) as client:
        assert deliver_round(client, up, []) == 1
    [delivery_id] = [int(p.name) for p in (up.edge_spool_dir / "reports").iterdir()]
    acks = AckJournal(spool.root)
    acks.record(delivery_id=delivery_id, username="not.at.the.county", display_name="?")
    with county_client(up) as client:
        assert deliver_pending(client, acks) == 0
        assert deliver_pending(client, acks) == 0
    ack = acks.get(delivery_id)
    assert ack is not None and (ack.state, ack.attempts) == (AckState.REFUSED, 1)
    page = _page(spool, up, cached_technician(spool.root), acks)
    try:
        with logged_in(f"http://127.0.0.1:{page.port}") as client:
            assert "县医院未接受" in client.get("/").text
    finally:
        page.stop()
    with county.sessions() as s:
        assert s.execute(select(ReportDelivery.acknowledged_at)).scalar_one() is None

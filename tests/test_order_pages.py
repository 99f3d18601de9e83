"""Orders in a real browser (Debian's Chromium via Playwright), Chinese first, on PostgreSQL + S3:
the administrator's 身份核对 page links a study whose name was mistyped at the modality, and
the reader sees the order's 申请单 above the report and the flags on the worklist."""

from __future__ import annotations

import json

from sqlalchemy import select

from relay.county.db.models import AuditEvent, Study
from relay.dicom.vocab import Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.county.test_order_matching import SITE, order, place, study
from tests.factories import make_site, make_user

WAIT_MS = 20_000


def test_the_identity_check_page_shows_both_identities_and_links_the_study(server, county):  # noqa: F811
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, PatientName="王^小民")  # a typo at the modality
    password = make_user(county, "admin", Role.ADMIN)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1440, "height": 900})
        page.set_default_timeout(WAIT_MS)
        page.on("dialog", lambda d: d.accept())
        log_in(page, server, "admin", password, next_path="/portal/admin/reconcile")
        row = page.locator(f"#reconcile tr[data-study='{uid}']")
        row.wait_for()
        assert page.locator("#nav a.current").inner_text() == "身份核对"
        cells = row.locator("td")
        assert "王小民" in cells.nth(1).inner_text() and "王小明" in cells.nth(2).inner_text()
        assert "HIS-1001" in cells.nth(2).inner_text() and "胸部正位" in cells.nth(2).inner_text()
        assert row.locator("dd.diff[data-field=name]").count() == 2  # marked on both sides
        assert row.locator("span.badge[data-field=name]").inner_text() == "姓名"
        page.screenshot(path=str(screenshot_path("reconcile-conflict-zh")), full_page=True)
        row.locator("button[data-action=link]").click()
        page.wait_for_selector("#action-msg:has-text('已关联')")
        page.wait_for_selector("#reconcile td:has-text('没有待核对的检查')")
    with county.sessions() as s:
        linked = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "study.reconcile")).scalar_one()
    assert (linked.order_match, linked.patient_name) == ("manual", "王^小明")
    assert event.actor == "admin" and json.loads(event.detail.split(" ", 1)[1])["after"]["order_match"] == "manual"


def test_the_reader_reads_with_the_order_and_sees_a_conflict_flagged(server, county):  # noqa: F811
    site_id, _ = make_site(county, SITE)
    place(county, order())
    place(county, order(placer_order_number="HIS-2002", accession_number="A2002", patient_id="P-2"))
    matched, _ = study(county, site_id)
    conflicting, _ = study(county, site_id, AccessionNumber="A2002", PatientID="P-9")
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password)
        page.wait_for_function("() => document.querySelectorAll('#worklist tbody tr').length === 2")
        flagged = page.locator(f"#worklist tr[data-study='{conflicting}']")
        assert "身份待核对" in flagged.inner_text()
        ok = page.locator(f"#worklist tr[data-study='{matched}']")
        assert "胸部正位" in ok.inner_text() and "身份待核对" not in ok.inner_text()
        ok.click()  # claims it, then the study page opens it
        page.wait_for_url(f"**/portal/studies/{matched}")
        box = page.locator("#order-box")
        box.locator("dd[data-field=history_summary]").wait_for()
        text = box.inner_text()
        for expected in ("申请单", "HIS-1001", "申请项目", "胸部正位", "临床诊断", "咳嗽待查", "检查目的", "排除肺炎",
                         "病史摘要", "咳嗽两周", "申请医生", "张医生", "申请科室", "内科"):
            assert expected in text, expected
        assert box.bounding_box()["y"] < page.locator("#right h2").bounding_box()["y"]  # above the report
        page.screenshot(path=str(screenshot_path("study-order-box-zh")), full_page=True)
        page.goto(f"{server}/portal/studies/{conflicting}")
        page.wait_for_selector("#order-box.warn:has-text('身份待核对')")
        assert "咳嗽待查" not in page.locator("#order-box").inner_text()

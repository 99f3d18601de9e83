"""The study page in a real browser: the viewer loads a series' metadata in one request (no
per-instance metadata), and opening the study is one audit row with what was viewed."""

from __future__ import annotations

import pydicom
from sqlalchemy import select

from relay.county.db.models import AuditEvent
from relay.dicom.vocab import Priority, Role
from tests.browser import chromium, log_in
from tests.county.test_dicomweb import index_all, server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import ingest
from tests.factories import make_site, make_user
from tests.test_viewer_compare import CT_HEAD, WAIT_MS, _claim, _loaded


def test_opening_the_study_page_loads_series_metadata_once_and_audits_once(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    for path in CT_HEAD:
        ingest(county, path.read_bytes(), site_id=site_id, priority=Priority.STAT)
    index_all(county)
    first = pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    _claim(server, "dr.li", password, study_uid)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1500, "height": 900})
        page.set_default_timeout(WAIT_MS)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/metadata" in r.url else None)
        log_in(page, server, "dr.li", password, next_path=f"/portal/studies/{study_uid}")
        _loaded(page, "pane-main")
        for i in range(1, len(CT_HEAD)):  # scroll through every slice
            page.keyboard.press("ArrowDown")
            page.wait_for_function(f"() => document.getElementById('pane-main').dataset.index === '{i}'")
            _loaded(page, "pane-main")
        assert "图像 5 / 5" in page.locator("#ov-tr").inner_text()
    assert [u.split("/dicomweb", 1)[1] for u in asked] == [f"/studies/{study_uid}/series/{series_uid}/metadata"]
    with county.sessions() as s:
        rows = list(s.execute(select(AuditEvent.actor, AuditEvent.detail).where(
            AuditEvent.action == "study.retrieve", AuditEvent.object_id == study_uid)))
    assert rows == [("dr.li", f"study page series=1 instances={len(CT_HEAD)}")]

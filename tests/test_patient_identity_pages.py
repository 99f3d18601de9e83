"""Patients without an ID and names that differ, as a reader sees them in a real browser
(Debian's Chromium): 无患者ID on the worklist and the study page, each study under its own
name, no priors between strangers, a warning on a name that differs."""

from __future__ import annotations

from relay.dicom.vocab import Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user

WAIT_MS = 15_000
GB = {"SpecificCharacterSet": "GB18030"}


def _study(county, site_id: int, **attrs) -> str:
    ds = make_dataset(**GB, **attrs)
    index(county, ingest(county, encode(ds), site_id=site_id))
    return str(ds.StudyInstanceUID)


def _row(page, uid: str) -> str:
    return page.locator(f"#worklist tbody tr[data-study='{uid}']").inner_text()


def test_studies_without_an_id_and_a_differing_name_on_the_worklist_and_the_study_page(server, county):  # noqa: F811
    site, _ = make_site(county, "qingshan")
    emergency = _study(county, site, PatientName="王^小明", PatientID="", StudyDate="20261201")
    stranger = _study(county, site, PatientName="李^娜", PatientID="", StudyDate="20261130")
    first = _study(county, site, PatientName="张^伟", PatientID="Q0042", StudyDate="20250101")
    renamed = _study(county, site, PatientName="张^玮", PatientID="Q0042", StudyDate="20261201")
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1400, "height": 800})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password)
        page.wait_for_function("() => document.querySelectorAll('#worklist tbody tr').length === 4")
        assert "王小明" in _row(page, emergency) and "无患者ID" in _row(page, emergency)
        assert "李娜" in _row(page, stranger) and "王小明" not in _row(page, stranger)
        assert "无患者ID" in _row(page, stranger)
        assert "张玮" in _row(page, renamed) and "患者姓名不一致" in _row(page, renamed)
        assert "张伟" in _row(page, first) and "患者姓名不一致" not in _row(page, first)
        page.screenshot(path=str(screenshot_path("worklist-no-patient-id-zh")), full_page=True)

        page.goto(f"{server}/portal/studies/{stranger}")
        page.wait_for_selector("#priors:has-text('无既往检查')")
        page.wait_for_selector("#patient .no-pid")
        assert page.locator("#patient b").inner_text() == "李娜"
        assert page.locator("#patient .no-pid").inner_text() == "无患者ID"
        assert page.locator("#name-warning").is_hidden()

        page.click("#lang-switch")
        page.wait_for_selector("#patient .no-pid:has-text('no patient ID')")

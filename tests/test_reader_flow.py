"""A reader's day in a real browser (Debian's Chromium via Playwright): from the worklist to a
signed report, on real PostgreSQL + S3, Chinese first."""

from __future__ import annotations

from pathlib import Path

import pydicom
import requests
from sqlalchemy import delete

from relay.county.db.models import PortalSession
from relay.dicom.vocab import Priority, Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import index_all, server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import ingest
from tests.factories import encode, make_dataset, make_site, make_user

CT_HEAD = sorted((Path(__file__).resolve().parents[1] / "sample_dicom" / "ct_head").glob("*.dcm"))
WAIT_MS = 15_000


def _seed(county) -> str:
    """A STAT head CT (5 slices), a routine study of another patient, and a prior of the CT's
    patient; returns the CT's study UID."""
    site_id, _ = make_site(county, "qingshan")
    ingest(county, encode(make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明", PatientID="QS001")),
           site_id=site_id)
    for path in CT_HEAD:
        ingest(county, path.read_bytes(), site_id=site_id, priority=Priority.STAT)
    ingest(county, encode(make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Li^Na=李^娜",
                                       PatientID="HK00056789", IssuerOfPatientID="HK", StudyDate="20230105",
                                       StudyDescription="头颅CT平扫")), site_id=site_id)
    index_all(county)
    return str(pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True).StudyInstanceUID)


def _image_loaded(page) -> None:
    page.wait_for_function("() => { const i = document.getElementById('image');"
                           " return i.naturalWidth > 0 && i.dataset.src && !document.getElementById('status').textContent; }",
                           timeout=WAIT_MS)


def test_a_reader_opens_a_stat_ct_reads_it_and_signs_a_critical_report(server, county):  # noqa: F811
    study_uid = _seed(county)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password)
        page.wait_for_selector("#worklist tbody tr")
        first = page.locator("#worklist tbody tr").nth(0)
        assert "急诊" in first.inner_text() and "李娜" in first.inner_text()

        thumbnails: list[str] = []
        page.on("response", lambda r: thumbnails.append(r.url) if r.url.endswith("/thumbnail") and r.ok else None)
        first.click()  # claims it, then the study page opens it
        page.wait_for_url(f"**/portal/studies/{study_uid}")
        _image_loaded(page)
        assert page.locator(".series").count() == 1
        page.wait_for_function("() => document.querySelector('.series img').naturalWidth > 0")
        assert [u.split("/dicomweb/")[1].count("/") for u in thumbnails] == [4]  # studies/s/series/se/thumbnail
        assert "5" in page.locator(".series").inner_text()
        page.wait_for_selector("#priors a")  # the same patient's 2023 study
        assert "2023-01-05" in page.locator("#priors").inner_text()
        page.screenshot(path=str(screenshot_path("reader-opened")))

        # stack scrolling: the wheel and the arrow keys move to other slices
        first_src = page.get_attribute("#image", "data-src")
        page.hover("#viewport")
        page.mouse.wheel(0, 120)
        page.wait_for_function("s => document.getElementById('image').dataset.src !== s", arg=first_src)
        second_src = page.get_attribute("#image", "data-src")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("s => document.getElementById('image').dataset.src !== s", arg=second_src)
        assert "图像 3 / 5" in page.locator("#ov-tr").inner_text()

        # window presets and drag
        with page.expect_request(lambda r: "window=400,1800" in r.url):
            page.click("#presets button:has-text('骨窗')")
        _image_loaded(page)
        assert "window=400,1800" in page.get_attribute("#image", "data-src")
        box = page.locator("#viewport").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        with page.expect_request(lambda r: "rendered?window=" in r.url and "window=400,1800" not in r.url):
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x - 60, y + 30, steps=5)
            page.mouse.up()
        _image_loaded(page)
        assert "window=400,1800" not in page.get_attribute("#image", "data-src")
        page.click("#zoom-in")
        page.screenshot(path=str(screenshot_path("reader-window")))

        # the report
        page.wait_for_selector("#editor:not([hidden])")
        assert page.locator("#template option").nth(1).inner_text() == "头颅CT平扫"  # ranked for a head CT
        page.select_option("#template", label="头颅CT平扫")
        assert "脑实质" in page.input_value("#findings")
        findings = "右侧颞部颅骨内板下见梭形高密度影，中线结构略向左移位。"
        impression = "右侧颞部急性硬膜外血肿。"
        page.fill("#findings", findings)
        page.fill("#impression", impression)
        page.fill("#advice", "急诊神经外科会诊。")
        page.check("#critical")
        page.click("#preview-btn")
        assert impression in page.locator("#preview").inner_text()
        page.screenshot(path=str(screenshot_path("reader-preview")))
        page.click("#preview-btn")

        page.click("#sign")
        page.fill("#signing-password", "sign-secret-88")
        page.click("#sign-confirm")
        page.wait_for_selector("#create-key:not([hidden])")  # no key yet: offered, with the same password
        page.screenshot(path=str(screenshot_path("reader-no-key")))
        page.click("#create-key")
        page.wait_for_selector("#history .doc[data-status=signed]")
        assert page.locator("#editor").is_hidden()
        assert "报告已签名" in page.locator("#report-notice").inner_text()
        assert impression in page.locator("#history").inner_text()
        assert page.locator("#addendum").is_visible()
        page.screenshot(path=str(screenshot_path("reader-signed")))

        # The page's own session cookie reads the API too (a GET needs no CSRF token).
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    reports = requests.get(f"{server}/api/studies/{study_uid}/reports", cookies=cookies, timeout=10).json()
    assert len(reports) == 1
    (report,) = reports
    assert report["status"] == "signed" and report["impression"] == impression
    assert report["critical"] is True and report["advice"] == "急诊神经外科会诊。"
    assert report["findings"] == findings and report["template"] == "head-ct-plain"


def test_an_ecg_shows_as_paper_and_a_multiframe_scrolls_by_frame_in_english(server, county):  # noqa: F811
    root = Path(__file__).resolve().parents[1] / "sample_dicom"
    site_id, _ = make_site(county, "qingshan")
    for path in [*(root / "ecg_12lead").glob("*.dcm"), *(root / "us_multiframe").glob("*.dcm")]:
        ingest(county, path.read_bytes(), site_id=site_id)
    index_all(county)
    uids = {}
    for sub in ("ecg_12lead", "us_multiframe"):
        (path,) = (root / sub).glob("*.dcm")
        uids[sub] = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
    password = make_user(county, "dr.wang", Role.RADIOLOGIST)
    token = requests.post(f"{server}/api/auth/token", data={"username": "dr.wang", "password": password},
                          timeout=10).json()["access_token"]
    for uid in uids.values():
        assert requests.post(f"{server}/api/worklist/{uid}/claim", headers={"Authorization": f"Bearer {token}"},
                             timeout=10).ok
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.wang", password, next_path=f"/portal/studies/{uids['ecg_12lead']}?lang=en")
        _image_loaded(page)
        assert page.locator("#presets button").count() == 0  # no window for an ECG
        assert "ECG" in page.locator("#ov-bl").inner_text()
        page.select_option("#template", label="常规十二导联心电图")
        page.screenshot(path=str(screenshot_path("reader-ecg-en")))

        page.goto(f"{server}/portal/studies/{uids['us_multiframe']}?lang=en")
        _image_loaded(page)
        assert "/frames/1/rendered" in page.get_attribute("#image", "data-src")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("() => document.getElementById('image').dataset.src.includes('/frames/2/')")
        assert "Frame 2 /" in page.locator("#ov-tr").inner_text()
        page.screenshot(path=str(screenshot_path("reader-us-en")))


def test_the_study_page_without_a_login_goes_back_to_the_login(server, county):  # noqa: F811
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{server}/portal/studies/1.2.3?lang=en")
        page.wait_for_url(f"{server}/portal/login?next=*", timeout=WAIT_MS)
        assert "Log in" in page.locator("form#login").inner_text()  # the language asked for stays


def test_a_reader_whose_session_ends_while_reading_is_sent_to_the_login_and_back(server, county):  # noqa: F811
    study_uid = _seed(county)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password)
        page.locator("#worklist tbody tr").nth(0).click()
        page.wait_for_url(f"**/portal/studies/{study_uid}")
        _image_loaded(page)
        with county.sessions() as s:  # the shift is over: the session ends on the server
            s.execute(delete(PortalSession))
            s.commit()
        page.click("#zoom-fit")
        page.keyboard.press("ArrowDown")  # the next slice needs the API: 401, so the login
        page.wait_for_url("**/portal/login?next=*")
        assert "登录" in page.locator("form#login").inner_text()
        page.fill("input[name=username]", "dr.li")
        page.fill("input[name=password]", password)
        page.click("form#login button[type=submit]")
        page.wait_for_url(f"**/portal/studies/{study_uid}")
        _image_loaded(page)
        page.screenshot(path=str(screenshot_path("reader-back-after-login")))

"""The viewer beyond one viewport, in a real browser: a prior study side by side with its own
series, window/level and scrolling (optionally linked), and cine for multi-frame images and
stacks. Assertions are on what the page shows and its state, never on timing."""

from __future__ import annotations

from pathlib import Path

import pydicom
import requests
from pydicom.uid import generate_uid

from relay.dicom.vocab import Priority, Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import index_all, server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import ingest
from tests.factories import encode, make_dataset, make_site, make_user

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"
CT_HEAD = sorted((SAMPLES / "ct_head").glob("*.dcm"))
WAIT_MS = 15_000


def _ct_and_its_prior(county) -> tuple[str, str]:
    """The head CT (5 slices, STAT) and, for the same patient ID + issuer, a head CT of 2024
    (the same slices under new UIDs); returns (current, prior) study UIDs."""
    site_id, _ = make_site(county, "qingshan")
    for path in CT_HEAD:
        ingest(county, path.read_bytes(), site_id=site_id, priority=Priority.STAT)
    prior_uid, series_uid = generate_uid(), generate_uid()
    for path in CT_HEAD:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = prior_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyDescription, ds.AccessionNumber = "20240301", "头颅CT平扫", "A2024"
        ingest(county, encode(ds), site_id=site_id)
    index_all(county)
    return str(pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True).StudyInstanceUID), prior_uid


def _claim(server: str, username: str, password: str, *uids: str) -> None:  # noqa: F811
    token = requests.post(f"{server}/api/auth/token", data={"username": username, "password": password},
                          timeout=10).json()["access_token"]
    for uid in uids:
        assert requests.post(f"{server}/api/worklist/{uid}/claim", headers={"Authorization": f"Bearer {token}"},
                             timeout=10).ok


def _loaded(page, pane: str) -> None:
    """The pane shows an image and says nothing (no 'loading', no error)."""
    page.wait_for_function(
        "p => { const r = document.getElementById(p), i = r.querySelector('[data-v=image]');"
        " return i.naturalWidth > 0 && i.dataset.src && !r.querySelector('[data-v=status]').textContent; }",
        arg=pane, timeout=WAIT_MS)


def _src(page, pane: str) -> str:
    return str(page.get_attribute(f"#{pane} [data-v=image]", "data-src"))


def _index(page, pane: str) -> int:
    return int(page.get_attribute(f"#{pane}", "data-index") or -1)


def _wheel_on(page, pane: str) -> None:
    page.hover(f"#{pane} [data-v=viewport]")
    page.mouse.wheel(0, 120)


def test_a_prior_opens_beside_the_study_with_its_own_series_window_and_scrolling(server, county):  # noqa: F811
    current, prior = _ct_and_its_prior(county)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    _claim(server, "dr.li", password, current)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1700, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password, next_path=f"/portal/studies/{current}")
        _loaded(page, "pane-main")
        row = page.locator(f"#priors .prior[data-study='{prior}']")
        assert "2024-03-01" in row.inner_text()
        assert page.locator("#pane-prior").is_hidden()

        row.locator("button.compare").click()
        page.wait_for_function("u => document.querySelector('#pane-prior [data-v=image]').dataset.src"
                               " && document.querySelector('#pane-prior [data-v=image]').dataset.src.includes(u)",
                               arg=prior)
        _loaded(page, "pane-prior")
        assert "compare" in (page.get_attribute("#panes", "class") or "")
        head = page.locator("#pane-prior [data-v=head]").inner_text()
        assert "既往检查" in head and "2024-03-01" in head and "头颅CT平扫" in head
        assert page.locator("#pane-prior .strip .series").count() == 1  # its own series list
        assert "图像 1 / 5" in page.locator("#pane-prior [data-v=ov-tr]").inner_text()
        assert prior not in _src(page, "pane-main") and current in _src(page, "pane-main")

        # its own window: a bone window on the prior leaves the current study as it was
        main_src = _src(page, "pane-main")
        page.locator("#pane-prior [data-v=presets] button:has-text('骨窗')").click()
        page.wait_for_function("() => document.querySelector('#pane-prior [data-v=image]').dataset.src.includes('window=400,1800')")
        _loaded(page, "pane-prior")
        assert _src(page, "pane-main") == main_src

        # its own scrolling
        _wheel_on(page, "pane-prior")
        page.wait_for_function("() => document.getElementById('pane-prior').dataset.index === '1'")
        assert _index(page, "pane-main") == 0
        assert "图像 2 / 5" in page.locator("#pane-prior [data-v=ov-tr]").inner_text()

        # linked scrolling: a step on one is a step on both
        page.check("#link-scroll")
        _wheel_on(page, "pane-main")
        page.wait_for_function("() => document.getElementById('pane-main').dataset.index === '1'"
                               " && document.getElementById('pane-prior').dataset.index === '2'")
        page.keyboard.press("ArrowDown")  # the keyboard drives the active (main) pane, and the prior follows
        page.wait_for_function("() => document.getElementById('pane-main').dataset.index === '2'"
                               " && document.getElementById('pane-prior').dataset.index === '3'")
        _loaded(page, "pane-prior")
        _loaded(page, "pane-main")
        assert "图像 3 / 5" in page.locator("#ov-tr").inner_text()
        assert "图像 4 / 5" in page.locator("#pane-prior [data-v=ov-tr]").inner_text()
        page.screenshot(path=str(screenshot_path("viewer-prior-side-by-side-zh")))

        page.click("#pane-prior .close-prior")
        assert page.locator("#pane-prior").is_hidden()
        assert "compare" not in (page.get_attribute("#panes", "class") or "")
        assert page.locator("#link-box").is_hidden()


def test_cine_plays_a_multiframe_and_a_stack_and_stops_when_paused(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    (us_path,) = (SAMPLES / "us_multiframe").glob("*.dcm")
    ingest(county, us_path.read_bytes(), site_id=site_id)
    for path in CT_HEAD:
        ingest(county, path.read_bytes(), site_id=site_id)
    index_all(county)
    us = str(pydicom.dcmread(us_path, stop_before_pixels=True).StudyInstanceUID)
    ct = str(pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True).StudyInstanceUID)
    password = make_user(county, "dr.wang", Role.RADIOLOGIST)
    _claim(server, "dr.wang", password, us, ct)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.wang", password, next_path=f"/portal/studies/{us}?lang=en")
        _loaded(page, "pane-main")
        assert page.locator("#cine-box").is_visible()
        assert "Space: play/pause" in page.locator("#help").inner_text()
        assert page.input_value("#fps") == "30"  # the modality's own rate (Recommended Display Frame Rate)
        page.fill("#fps", "8")
        page.dispatch_event("#fps", "change")

        page.click("#cine")
        assert page.get_attribute("#pane-main", "data-playing") == "true"
        assert "Pause" in page.locator("#cine").inner_text()
        page.wait_for_function("() => +document.getElementById('pane-main').dataset.frame >= 4")
        page.wait_for_function("() => document.getElementById('pane-main').dataset.frame === '1'")  # round again
        page.screenshot(path=str(screenshot_path("viewer-cine-us-en")))

        page.click("#cine")
        assert page.get_attribute("#pane-main", "data-playing") == "false"
        assert "Play" in page.locator("#cine").inner_text()
        _loaded(page, "pane-main")
        stopped = page.get_attribute("#pane-main", "data-frame")
        page.wait_for_timeout(1000)  # eight frame periods at 8 fps: a running cine would have moved on
        assert page.get_attribute("#pane-main", "data-frame") == stopped
        assert f"Frame {stopped} / 8" in page.locator("#ov-tr").inner_text()

        # a stack plays slice by slice, by the space bar too
        page.goto(f"{server}/portal/studies/{ct}?lang=en")
        _loaded(page, "pane-main")
        page.fill("#fps", "10")
        page.dispatch_event("#fps", "change")
        page.focus("#viewport")
        page.keyboard.press(" ")
        assert page.get_attribute("#pane-main", "data-playing") == "true"
        page.wait_for_function("() => document.getElementById('pane-main').dataset.index === '4'")
        page.wait_for_function("() => document.getElementById('pane-main').dataset.index === '0'")
        page.keyboard.press(" ")
        assert page.get_attribute("#pane-main", "data-playing") == "false"
        page.screenshot(path=str(screenshot_path("viewer-cine-ct-stack-en")))


def test_a_corrected_patient_name_is_shown_as_a_warning_not_swallowed(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    patient = {"PatientID": "HK00056789", "IssuerOfPatientID": "HK", "SpecificCharacterSet": "ISO_IR 192"}
    ingest(county, encode(make_dataset(PatientName="Li^Na=李^娜", StudyDate="20230105", StudyDescription="胸部正位片",
                                       **patient)), site_id=site_id)
    for path in CT_HEAD:  # the same patient ID + issuer, the name corrected at the township
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "Li^Nan=李^婻"
        ingest(county, encode(ds), site_id=site_id)
    index_all(county)
    current = str(pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True).StudyInstanceUID)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    _claim(server, "dr.li", password, current)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password, next_path=f"/portal/studies/{current}")
        _loaded(page, "pane-main")
        page.wait_for_selector("#name-warning:not([hidden])")
        warning = page.locator("#name-warning").inner_text()
        assert "患者姓名不一致" in warning
        assert "李婻 (Li Nan)（当前检查）" in warning and "李娜 (Li Na)（既往检查 2023-01-05）" in warning
        assert "患者姓名不一致" in page.locator("#patient .name-warn").inner_text()
        assert page.locator("#patient b").inner_text() == "李婻 (Li Nan)"  # what this study's images say
        assert "李娜 (Li Na)" in page.locator("#priors .prior .pname").inner_text()
        page.screenshot(path=str(screenshot_path("viewer-name-changed-zh")))

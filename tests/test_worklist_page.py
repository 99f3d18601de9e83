"""The worklist page in a real browser (Debian's Chromium): filters kept in the address,
an SLA countdown that ticks, and polling that shows new studies without a reload."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from relay.county.db.engine import session_scope
from relay.county.db.models import Study
from relay.dicom.vocab import Priority, Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user

WAIT_MS = 15_000


def _study(county, site_id: int, priority: Priority = Priority.ROUTINE, age: timedelta | None = None, **attrs) -> str:
    ds = make_dataset(SpecificCharacterSet="ISO_IR 192", **attrs)
    index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
    if age is not None:
        with session_scope(county.sessions) as s:
            s.execute(update(Study).where(Study.study_uid == ds.StudyInstanceUID)
                      .values(created_at=datetime.now(UTC) - age))
            s.commit()
    return str(ds.StudyInstanceUID)


def _api_calls(page) -> list[str]:
    calls: list[str] = []
    page.on("request", lambda r: calls.append(r.url) if "/api/worklist" in r.url else None)
    return calls


def test_choosing_a_filter_narrows_the_rows_and_the_address_keeps_it(server, county):  # noqa: F811
    qingshan, _ = make_site(county, "qingshan")
    huxi, _ = make_site(county, "huxi")
    _study(county, qingshan, Priority.STAT, PatientName="王^小明", PatientID="QS001")
    ecg = _study(county, qingshan, Modality="ECG", PatientName="Li^Na=李^娜", PatientID="QS002")
    _study(county, huxi, Priority.URGENT, Modality="DX", PatientName="张^三", PatientID="HX001")
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1400, "height": 800})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password)
        rows = page.locator("#worklist tbody tr")
        page.wait_for_function("() => document.querySelectorAll('#worklist tbody tr').length === 3")
        assert "急诊" in rows.nth(0).inner_text()  # STAT first

        page.select_option("#filters select[name=modality]", "ECG")
        page.wait_for_function("() => document.querySelectorAll('#worklist tbody tr').length === 1")
        assert rows.nth(0).get_attribute("data-study") == ecg and "李娜" in rows.nth(0).inner_text()
        assert "modality=ECG" in page.url
        page.screenshot(path=str(screenshot_path("worklist-filtered-zh")), full_page=True)

        page.reload()  # a bookmark of this address opens the same view
        page.wait_for_selector(f"#worklist tbody tr[data-study='{ecg}']")
        assert rows.count() == 1 and page.input_value("#filters select[name=modality]") == "ECG"

        page.select_option("#filters select[name=modality]", "")
        page.fill("#filters input[name=patient]", "张三")
        page.wait_for_function("() => { const r = document.querySelectorAll('#worklist tbody tr');"
                               " return r.length === 1 && r[0].innerText.includes('HX001'); }")
        page.select_option("#filters select[name=site]", "qingshan")  # 张三 is at huxi: nothing left
        page.wait_for_selector("#empty:has-text('没有符合筛选条件的检查')")
        assert "site=qingshan" in page.url and "patient=" in page.url

        page.click("#lang-switch")  # the other language keeps the view
        page.wait_for_selector("#empty:has-text('No study matches the filters')")
        assert page.input_value("#filters select[name=site]") == "qingshan"


def test_the_sla_cell_counts_down_every_second_and_shows_overdue_in_red(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    late = _study(county, site_id, Priority.STAT, age=timedelta(minutes=45), PatientID="LATE")  # 30 min SLA
    fresh = _study(county, site_id, Priority.STAT, PatientID="FRESH")
    routine = _study(county, site_id, PatientID="ROUTINE")  # a day
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1400, "height": 800})
        page.set_default_timeout(WAIT_MS)
        calls = _api_calls(page)
        log_in(page, server, "dr.li", password, next_path="/portal/?refresh=600")  # no poll during the test
        page.wait_for_selector(f"tr[data-study='{routine}'] td.sla span:text-matches('剩余')")

        def sla(uid: str) -> str:
            return page.locator(f"tr[data-study='{uid}'] td.sla span").inner_text()

        assert re.fullmatch(r"已超时 1[45] 分钟 \d\d 秒", sla(late)), sla(late)
        assert page.locator(f"tr[data-study='{late}'] td.sla span.overdue").count() == 1
        assert re.fullmatch(r"剩余 2\d 分钟 \d\d 秒", sla(fresh)), sla(fresh)
        assert page.locator(f"tr[data-study='{fresh}'] td.sla span.overdue").count() == 0
        assert re.fullmatch(r"剩余 23 小时 5\d 分钟", sla(routine)), sla(routine)
        before = sla(fresh)
        page.wait_for_function("([sel, text]) => document.querySelector(sel).textContent !== text",
                               arg=[f"tr[data-study='{fresh}'] td.sla span", before])
        assert len(calls) == 1  # it ticked in the page; nothing was fetched again
        page.screenshot(path=str(screenshot_path("worklist-sla-zh")), full_page=True)


def test_a_study_indexed_after_the_page_loaded_appears_without_a_reload(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    first = _study(county, site_id, PatientID="FIRST")
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN")
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password, next_path="/portal/?refresh=1")
        page.wait_for_selector(f"tr[data-study='{first}']")
        assert page.locator("#updated").inner_text().startswith("更新于")
        page.evaluate("window.__notReloaded = true")
        later = _study(county, site_id, Priority.STAT, PatientID="LATER")
        page.wait_for_selector(f"#worklist tbody tr:first-child[data-study='{later}']")  # STAT: on top
        assert page.evaluate("window.__notReloaded") is True


def test_a_hidden_tab_stops_polling_and_refreshes_when_shown_again(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    _study(county, site_id, PatientID="ONE")
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN")
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password, next_path="/portal/?refresh=1")
        page.wait_for_selector("#worklist tbody tr")
        calls = _api_calls(page)
        page.evaluate("""() => { window.__hidden = true;
            Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__hidden });
            document.dispatchEvent(new Event('visibilitychange')); }""")
        page.wait_for_timeout(3000)  # three poll intervals
        assert calls == []
        with page.expect_request(lambda r: "/api/worklist" in r.url):  # no timer runs: only being shown fetches
            page.evaluate("() => { window.__hidden = false; document.dispatchEvent(new Event('visibilitychange')); }")

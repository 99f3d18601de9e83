"""The duty roster page (值班表) in a real browser: an administrator adds a shift with the form,
sees it in the week and in "on duty now", and removes it; a reader sees the page read-only."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from relay.county.db.models import User
from relay.dicom.vocab import Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.factories import make_user

WAIT_MS = 15_000


def test_an_administrator_adds_a_shift_sees_who_is_on_duty_and_removes_it(server, county):  # noqa: F811
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    with county.sessions() as s:
        s.execute(update(User).where(User.username == "dr.wang").values(display_name="王建国"))
        s.commit()
    password = make_user(county, "boss", Role.ADMIN)
    today = datetime.now(ZoneInfo(county.settings.timezone)).date()
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1500, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "boss", password, next_path="/portal/roster")
        assert page.locator("#nav a.current").inner_text() == "值班表"
        page.wait_for_selector("#now-list .nobody")
        assert "当前无人值班" in page.locator("#now").inner_text()

        # a whole-day line for today's weekday: whatever the hour, it covers now
        page.wait_for_selector("#f-reader option[value='dr.wang']", state="attached")
        page.select_option("#f-weekday", str(today.weekday()))
        page.fill("#f-start", "00:00")
        page.fill("#f-end", "00:00")
        page.fill("#f-label", "全天班")
        page.click("#f-add")
        chip = page.locator(f".day[data-day='{today.isoformat()}'] .shift[data-user='dr.wang']")
        chip.wait_for()
        assert "全天班" in chip.inner_text() and "王建国" in chip.inner_text() and "每周" in chip.inner_text()
        page.wait_for_selector("#now-list .who[data-user='dr.wang']")
        assert "全天班" in page.locator("#now-list").inner_text()

        # a night shift from the preset, on another day
        other = (today.weekday() + 3) % 7
        page.select_option("#f-weekday", str(other))
        page.click("button[data-preset='17:30,08:00']")
        page.click("#f-add")
        night = page.locator(f".day[data-day] .shift.night:has-text('夜班')")
        night.wait_for()
        assert "17:30–次日 08:00" in night.inner_text()
        page.screenshot(path=str(screenshot_path("roster-admin-zh")))

        page.once("dialog", lambda d: d.accept())
        chip.locator("button").click()
        page.wait_for_selector("#now-list .nobody")
        assert chip.count() == 0

        # the manual switch: on duty whatever the roster says
        page.check("#switch-list input[data-user='dr.wang']")
        page.wait_for_selector("#now-list .who[data-user='dr.wang']")
        assert "手动值班" in page.locator("#now-list").inner_text()
        page.screenshot(path=str(screenshot_path("roster-switch-zh")))
    with county.sessions() as s:  # the page wrote to the real user
        assert s.execute(select(User.on_duty).where(User.username == "dr.wang")).scalar_one() is True


def test_a_reader_sees_the_roster_without_the_form(server, county):  # noqa: F811
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.li", password, next_path="/portal/roster?lang=en")
        page.wait_for_selector("#week .day")
        assert page.locator(".day").count() == 7
        assert page.locator("#add").count() == 0
        assert page.locator("#critical").count() == 0  # no lead line: no open critical results
        assert "Duty roster" in page.locator("#nav").inner_text()
        page.screenshot(path=str(screenshot_path("roster-reader-en")))


def test_an_administrator_makes_a_lead_shift_and_the_page_shows_the_lead_and_open_critical_results(
        server, county):  # noqa: F811
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    password = make_user(county, "boss", Role.ADMIN)
    today = datetime.now(ZoneInfo(county.settings.timezone)).date()
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN", viewport={"width": 1500, "height": 900})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "boss", password, next_path="/portal/roster")
        page.wait_for_selector("#critical-list .empty")
        assert "没有未确认的危急值" in page.locator("#critical").inner_text()
        page.wait_for_selector("#f-reader option[value='dr.wang']", state="attached")
        page.select_option("#f-weekday", str(today.weekday()))
        page.fill("#f-start", "00:00")
        page.fill("#f-end", "00:00")
        page.check("#f-lead")
        page.click("#f-add")
        chip = page.locator(f".day[data-day='{today.isoformat()}'] .shift[data-user='dr.wang']")
        chip.wait_for()
        assert "组长" in chip.locator(".badge-lead").inner_text()
        page.wait_for_selector("#now-list .who[data-user='dr.wang'] .badge-lead")
        page.screenshot(path=str(screenshot_path("roster-lead-zh")))

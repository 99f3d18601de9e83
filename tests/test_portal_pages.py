"""The portal in a real browser (Debian's Chromium via Playwright), Chinese first."""

from __future__ import annotations

from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import index_all, server  # noqa: F401 - the uvicorn fixture
from tests.county.test_index import ingest
from tests.factories import encode, make_dataset, make_site, make_user
from relay.dicom.vocab import Priority, Role


def test_a_reader_logs_in_and_sees_the_worklist_in_chinese_stat_first(server, county):  # noqa: F811
    site_id, _ = make_site(county, "qingshan")
    ingest(county, encode(make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明", PatientID="QS001")),
           site_id=site_id)
    ingest(county, encode(make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="陈^思喆", PatientID="QS002")),
           site_id=site_id, priority=Priority.STAT)
    ingest(county, encode(make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Li^Na=李^娜", PatientID="QS003")),
           site_id=site_id)
    index_all(county)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN")
        page.goto(f"{server}/portal/")
        page.wait_for_url(f"{server}/portal/login")  # no session: the login form, in Chinese
        assert page.locator("h1").inner_text().startswith("县域影像心电诊断中心")
        assert "登录" in page.locator("form#login").inner_text()
        page.screenshot(path=str(screenshot_path("login-zh")))
        page.fill("input[name=username]", "dr.li")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("#worklist tbody tr")
        assert "relay_session" not in page.evaluate("document.cookie")  # HttpOnly: not for scripts
        assert page.evaluate("Object.keys(sessionStorage).length") == 0  # no token in JS storage
        assert "dr.li" in page.locator("#who").inner_text() and "诊断医师" in page.locator("#who").inner_text()
        rows = page.locator("#worklist tbody tr")
        assert rows.count() == 3
        assert "李娜 (Li Na)" in page.locator("#worklist").inner_text()
        assert "陈思喆" in rows.nth(0).inner_text() and "急诊" in rows.nth(0).inner_text()
        assert "王小明" in rows.nth(1).inner_text()
        page.screenshot(path=str(screenshot_path("worklist-zh")), full_page=True)
        page.click("text=English")
        page.wait_for_selector("#worklist tbody tr")
        assert "Worklist" in page.locator("#nav a.current").inner_text()
        assert "Reader" in page.locator("#who").inner_text() and "Log out" in page.locator("#logout").inner_text()
        assert "STAT" in page.locator("#worklist tbody tr").nth(0).inner_text()


def test_a_wrong_password_says_so_in_chinese(server, county):  # noqa: F811
    make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{server}/portal/")
        page.fill("input[name=username]", "dr.li")
        page.fill("input[name=password]", "wrong-password")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error:has-text('用户名或密码错误')")
        page.screenshot(path=str(screenshot_path("login-failed-zh")))


def test_logout_ends_the_session_and_the_pages_go_back_to_the_login(server, county):  # noqa: F811
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with chromium() as browser:
        context = browser.new_context(locale="zh-CN")
        page = context.new_page()
        log_in(page, server, "dr.li", password)
        page.wait_for_selector("#empty:not([hidden])")  # nothing waiting: the worklist says so
        old = [c for c in context.cookies() if c["name"] == "relay_session"]
        assert old and old[0]["httpOnly"] and old[0]["sameSite"] == "Lax"
        page.click("#logout")
        page.wait_for_url(f"{server}/portal/login")
        # Even the old cookie, put back, opens nothing: the session is gone on the server.
        context.add_cookies(old)
        page.goto(f"{server}/portal/")
        page.wait_for_url(f"{server}/portal/login")
        response = page.request.get(f"{server}/api/worklist")
        assert response.status == 401
        page.screenshot(path=str(screenshot_path("logged-out-zh")))

"""An escalated critical result (危急值) with no escalation URL configured still reaches a
person: every portal page of the on-duty lead shows a banner, beeps and raises a desktop
notification; a reader who is not the lead sees nothing. In a real browser, and the API
behind it."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from relay.config import Settings
from relay.county.app import create_app
from relay.county.clock import now_utc
from relay.county.reports.alerts import alert_round
from relay.dicom.vocab import Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_critical_alerts import rostered
from tests.county.test_delivery import signed_study
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.county.test_reports import login

WAIT_MS = 20_000
PASSWORD = "correct-horse-1"  # tests.factories.make_user's default, which rostered() uses


def _escalated_without_url(county, *, lead: bool = True) -> str:
    """A signed critical result, unacknowledged past the deadline, escalated by a round with no
    escalation URL; dr.zhang is the lead on duty (``lead``), dr.zhao on duty but not lead."""
    now = now_utc()
    rostered(county, "dr.zhang", "张组长", around=now, lead=lead)
    rostered(county, "dr.zhao", "赵医生", around=now, lead=False)
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, critical=True)
    settings = Settings(critical_webhook_url=None, critical_escalation_url=None, critical_escalate_minutes=15)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings, now=now + timedelta(minutes=16)) == (1, 1)
    return uid


def test_the_alert_api_answers_the_lead_and_not_other_readers(county):
    uid = _escalated_without_url(county)
    with TestClient(create_app(county)) as client:
        unrelated = login(client, county, "dr.sun", Role.RADIOLOGIST)
        (item,) = client.get("/api/roster/critical/alerts", headers=_token(client, "dr.zhang")).json()
        assert item["study_instance_uid"] == uid and item["site"] == "township-a"
        assert client.get("/api/roster/critical/alerts", headers=_token(client, "dr.zhao")).json() == []
        assert client.get("/api/roster/critical/alerts", headers=unrelated).json() == []
        admin = login(client, county, "boss", Role.ADMIN)
        assert client.get("/api/roster/critical/alerts", headers=admin).json() == []  # a lead got it
        tech = login(client, county, "tech.li", Role.TECHNICIAN, site="township-a")
        assert client.get("/api/roster/critical/alerts", headers=tech).status_code == 403


def test_with_no_lead_on_duty_the_administrators_get_the_alert(county):
    uid = _escalated_without_url(county, lead=False)
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        assert [a["study_instance_uid"] for a in client.get("/api/roster/critical/alerts", headers=admin).json()] == [uid]
        assert client.get("/api/roster/critical/alerts", headers=_token(client, "dr.zhao")).json() == []


def _token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_the_on_duty_lead_sees_a_banner_hears_a_beep_and_gets_a_notification_a_reader_does_not(server, county):  # noqa: F811
    uid = _escalated_without_url(county)
    with chromium() as browser:
        lead = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
        lead.grant_permissions(["notifications"], origin=server)
        page = lead.new_page()
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.zhang", PASSWORD)
        banner = page.locator("#critical-alert")
        banner.wait_for(state="visible")
        assert "危急值已上报给您" in banner.inner_text() and uid in banner.inner_text()
        assert banner.locator(f"a[href='/portal/studies/{uid}']").count() == 1
        page.wait_for_function("() => document.getElementById('critical-alert').dataset.beeps === '1'")
        page.wait_for_function("() => document.getElementById('critical-alert').dataset.notified === '1'")
        page.screenshot(path=str(screenshot_path("critical-banner-lead-zh")))
        page.goto(f"{server}/portal/roster")  # every page, not only the worklist
        page.locator("#critical-alert").wait_for(state="visible")
        assert uid in page.locator("#critical-alert").inner_text()
        lead.close()

        other = browser.new_context(locale="zh-CN")
        page = other.new_page()
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "dr.zhao", PASSWORD)
        page.wait_for_function("() => Number(document.getElementById('critical-alert').dataset.polls || 0) >= 1")
        assert page.locator("#critical-alert").is_hidden()
        assert page.locator("#critical-alert").get_attribute("data-beeps") is None
        other.close()

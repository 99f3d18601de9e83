"""Critical results: a webhook at once, escalation to the roster's on-duty lead when nobody
at the township answers, and the open ones on the roster page's API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from relay.config import Settings
from relay.county.app import create_app
from relay.county.clock import now_utc
from relay.county.db.engine import session_scope
from relay.county.db.models import OutboxEvent, ReportDelivery, User
from relay.county.reading import roster
from relay.county.reports.alerts import NO_LEAD, alert_round
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study, site_token
from tests.county.test_reading import principal
from tests.county.test_reports import login


class Receiver:
    """A real HTTP endpoint on loopback that records what it is sent (a gateway stand-in)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.received.append((self.path, body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def settings_for(receiver: Receiver) -> Settings:
    return Settings(critical_webhook_url=f"{receiver.url}/township", critical_escalation_url=f"{receiver.url}/lead",
                    critical_escalate_minutes=15)


def test_a_critical_report_alerts_the_township_once_without_patient_data(county, receiver):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, critical=True)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver)) == (1, 0)
        assert alert_round(session=s, settings=settings_for(receiver)) == (0, 0)
    (path, body), = receiver.received
    assert path == "/township" and body["study_instance_uid"] == uid and body["event"] == "critical.result"
    assert "patient" not in json.dumps(body).lower()


def test_unacknowledged_after_the_deadline_escalates_to_the_lead_and_acknowledged_does_not(county, receiver):
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    later = now_utc() + timedelta(minutes=16)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver), now=later) == (1, 1)
        assert alert_round(session=s, settings=settings_for(receiver), now=later) == (0, 0)
        topics = [t for (t,) in s.execute(select(OutboxEvent.topic))]
    assert [p for p, _ in receiver.received] == ["/township", "/lead"]
    assert "critical.escalated" in topics


def test_an_acknowledged_critical_result_is_never_escalated(county, receiver):
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
        edge = site_token(county)
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        client.post(f"/api/edges/reports/{item['delivery_id']}/acknowledged", json={"by": "技师李"}, headers=edge)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver), now=now_utc() + timedelta(hours=1)) == (0, 0)


def test_a_webhook_that_fails_is_tried_again_next_round(county, receiver):
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    receiver.status = 503
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver)) == (0, 0)
        receiver.status = 200
        assert alert_round(session=s, settings=settings_for(receiver)) == (1, 0)
    assert len(receiver.received) == 2


def rostered(county, username: str, display_name: str, *, around: datetime, lead: bool) -> None:
    """A reader (made here unless they exist) with a dated roster line from an hour before
    ``around`` to an hour after."""
    with county.sessions() as s:
        known = s.execute(select(User.id).where(User.username == username)).scalar_one_or_none()
    user_id = known if known is not None else principal(county, username).user_id
    admin = principal(county, f"admin-for-{username}", Role.ADMIN)
    with session_scope(county.sessions) as s:
        s.execute(update(User).where(User.id == user_id).values(display_name=display_name))
        s.commit()
        start = (around - timedelta(hours=1)).astimezone(ZoneInfo(Settings().timezone))
        roster.create_shift(session=s, principal=admin, username=username, weekday=None, on_date=start.date(),
                            start=start.time(), end=(start + timedelta(hours=2)).time(), lead=lead)


def escalations(county, receiver: Receiver) -> tuple[dict, dict, str]:
    """The escalation POST, the ``critical.escalated`` event and whom the delivery says it went to."""
    (body,) = [b for p, b in receiver.received if p == "/lead"]
    with county.sessions() as s:
        (event,) = [json.loads(p) for (p,) in s.execute(
            select(OutboxEvent.payload).where(OutboxEvent.topic == "critical.escalated"))]
        (to,) = s.execute(select(ReportDelivery.escalated_to)).scalars()
    return body, event, to


def test_the_escalation_names_the_lead_on_duty_at_that_moment(county, receiver):
    later = now_utc() + timedelta(minutes=16)
    rostered(county, "dr.zhang", "张组长", around=later, lead=True)
    rostered(county, "dr.zhao", "赵医生", around=later, lead=False)  # on duty, not the lead
    rostered(county, "dr.qian", "钱组长", around=later + timedelta(hours=5), lead=True)  # lead later today
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver), now=later) == (1, 1)
    body, event, to = escalations(county, receiver)
    assert body["leads"] == [{"username": "dr.zhang", "display_name": "张组长"}] and body["note"] == ""
    assert event["leads"] == body["leads"]
    assert to == "dr.zhang"
    assert "patient" not in json.dumps(body).lower()


def test_with_no_lead_on_duty_it_escalates_anyway_and_says_so(county, receiver):
    later = now_utc() + timedelta(minutes=16)
    rostered(county, "dr.zhao", "赵医生", around=later, lead=False)
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings_for(receiver), now=later) == (1, 1)
    body, event, to = escalations(county, receiver)
    assert body["leads"] == [] and body["note"] == NO_LEAD == "no lead on duty"
    assert event["note"] == NO_LEAD and to == ""


def test_admins_and_leads_see_open_critical_results_with_their_escalation_other_readers_do_not(county, receiver):
    later = now_utc() + timedelta(minutes=16)
    with TestClient(create_app(county)) as client:
        lead = login(client, county, "dr.zhang", Role.RADIOLOGIST)
        rostered(county, "dr.zhang", "张组长", around=later, lead=True)
        uid = signed_study(client, county, critical=True)
        admin = login(client, county, "boss", Role.ADMIN)
        (item,) = client.get("/api/roster/critical", headers=admin).json()
        assert item["study_instance_uid"] == uid and item["escalated_at"] is None
        with county.sessions() as s:
            alert_round(session=s, settings=settings_for(receiver), now=later)
        (item,) = client.get("/api/roster/critical", headers=lead).json()
        assert item["escalated_to"] == ["dr.zhang"] and item["escalated_at"] is not None
        other = login(client, county, "dr.sun", Role.RADIOLOGIST)
        assert client.get("/api/roster/critical", headers=other).status_code == 403
        edge = site_token(county)
        client.post(f"/api/edges/reports/{item['delivery_id']}/acknowledged", json={"by": "技师李"}, headers=edge)
        assert client.get("/api/roster/critical", headers=admin).json() == []

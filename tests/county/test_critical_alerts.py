"""Critical results: a webhook at once, escalation when nobody at the township answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.config import Settings
from relay.county.app import create_app
from relay.county.auth.service import now_utc
from relay.county.db.models import OutboxEvent
from relay.county.reports.alerts import alert_round
from tests.county.test_delivery import signed_study, site_token


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

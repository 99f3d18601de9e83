"""Critical alerts with several workers: every worker process runs alert rounds, so two
rounds race over the same critical result. Each webhook and each escalation must reach
the receiver exactly once, with an idempotency key, and the POST must not be sent while
a database transaction is open."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from relay.config import Settings
from relay.county.app import create_app
from relay.county.clock import now_utc
from relay.county.db.models import OutboxEvent, ReportDelivery
from relay.county.reports import alerts
from relay.county.reports.alerts import alert_round
from tests.county.test_delivery import signed_study

HOLD_S = 1.0
"""How long the receiver holds each POST before answering: long enough that the second
round reads the deliveries while the first is still sending (it widens the race; nothing
asserts a duration)."""


class SlowReceiver:
    """A real HTTP endpoint on loopback that records every POST (path, body, Idempotency-Key)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.received.append((self.path, body, self.headers.get("Idempotency-Key", "")))
                time.sleep(HOLD_S)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def _one_round(settings_json: str, now_iso: str, start: Any, out: Any) -> None:
    """A worker process's alert round: its own County (engine, sessions), started with the other."""
    from relay.county.context import County

    county = County(Settings.model_validate_json(settings_json))
    try:
        start.wait(timeout=120)
        with county.sessions() as s:
            out.put(alert_round(session=s, settings=county.settings, now=datetime.fromisoformat(now_iso)))
    finally:
        county.close()


def test_two_worker_processes_racing_send_each_webhook_and_escalation_exactly_once(county):
    receiver = SlowReceiver()
    try:
        with TestClient(create_app(county)) as client:
            uid = signed_study(client, county, critical=True)
        settings = county.settings.model_copy(update={
            "critical_webhook_url": f"{receiver.url}/township", "critical_escalation_url": f"{receiver.url}/lead",
            "critical_escalate_minutes": 15})
        later = now_utc() + timedelta(minutes=16)  # due for escalation as well
        ctx = mp.get_context("spawn")
        start, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_one_round, args=(settings.model_dump_json(), later.isoformat(), start, out))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
            assert p.exitcode == 0, "an alert round process failed"
        results = sorted(out.get(timeout=10) for _ in procs)
    finally:
        receiver.server.shutdown()
    paths = sorted(p for p, _b, _k in receiver.received)
    assert paths == ["/lead", "/township"], receiver.received
    assert results == [(0, 0), (1, 1)] or sorted(map(sum, results)) == [1, 1]  # one round did each send
    keys = {p: k for p, _b, k in receiver.received}
    bodies = {p: b for p, b, _k in receiver.received}
    with county.sessions() as s:
        (delivery,) = s.execute(select(ReportDelivery)).scalars()
        events = list(s.execute(select(OutboxEvent.topic).where(OutboxEvent.topic == "critical.escalated")).scalars())
    assert keys == {"/township": f"critical.result:{delivery.id}", "/lead": f"critical.escalated:{delivery.id}"}
    assert all(bodies[p]["idempotency_key"] == keys[p] for p in keys) and bodies["/lead"]["study_instance_uid"] == uid
    assert delivery.critical_notified_at is not None and delivery.escalated_at is not None
    assert delivery.critical_claimed_at is None and delivery.escalation_claimed_at is None
    assert events == ["critical.escalated"]


def test_the_post_is_sent_with_no_database_transaction_open(county):
    """While a POST is out, no connection of this test's database sits in an open
    transaction: the round committed its claim (and ended its read) before sending."""
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    open_during_post: list[int] = []

    def post(url: str, payload: dict[str, Any]) -> bool:
        with county.engine.connect() as conn:
            open_during_post.append(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'").scalar_one())
            conn.rollback()
        return True

    settings = Settings(critical_webhook_url="http://127.0.0.1:9/township",
                        critical_escalation_url="http://127.0.0.1:9/lead", critical_escalate_minutes=15)
    with county.sessions() as s:
        assert alert_round(session=s, settings=settings, post=post, now=now_utc() + timedelta(minutes=16)) == (1, 1)
    assert open_during_post == [0, 0]


def test_a_claim_left_by_a_round_that_died_is_taken_again_after_the_lease_and_not_before(county):
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
    sent: list[str] = []

    def post(url: str, payload: dict[str, Any]) -> bool:
        sent.append(payload["idempotency_key"])
        return True

    settings = Settings(critical_webhook_url="http://127.0.0.1:9/unused", critical_escalate_minutes=15)
    now = now_utc()
    with county.sessions() as s:  # a round claimed the webhook, then died before recording
        s.execute(update(ReportDelivery).values(critical_claimed_at=now - timedelta(seconds=alerts.CLAIM_LEASE_S / 2)))
        s.commit()
        assert alert_round(session=s, settings=settings, post=post, now=now) == (0, 0)
        assert sent == []
        later = now + timedelta(seconds=alerts.CLAIM_LEASE_S)
        assert alert_round(session=s, settings=settings, post=post, now=later) == (1, 0)
        delivery_id = s.execute(select(ReportDelivery.id)).scalar_one()
    assert sent == [alerts.idempotency_key(alerts.Alert.RESULT, delivery_id)]

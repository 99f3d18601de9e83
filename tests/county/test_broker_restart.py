"""RabbitMQ restarted and killed while events are published with confirms (issue 13, row 7).

The county's publisher (relay.county.events.publisher) marks an outbox event published only
after the broker confirmed it. A broker of the test's own is restarted (cleanly) and then
killed (SIGKILL of the Erlang VM) while it publishes; at the end every event the outbox
says was published is in the durable queue bound to the exchange: confirmed-then-lost 0.
Duplicates are allowed (at least once: a confirm lost in the crash is published again) and
counted; consumers dedupe on ``message_id``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import func, select

from relay.county.context import County
from relay.county.db.models import OutboxEvent
from relay.county.events import outbox
from relay.county.events.publisher import EXCHANGE, EventPublisher
from tests.processes import wait_for
from tests.servers import PrivateRabbit

EVENTS = 2000
"""Events in the suite; `bench/broker_restart.py --events 10000` is the full row."""
SINK = "relay-test-sink"


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit()
    yield node
    node.stop()


def _bind_sink(url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        ch.queue_declare(SINK, durable=True)
        ch.queue_bind(SINK, EXCHANGE, routing_key="#")
    finally:
        conn.close()


def _drain(url: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        while True:
            method, props, _ = ch.basic_get(SINK, auto_ack=True)
            if method is None:
                return seen
            seen[str(props.message_id)] += 1
    finally:
        conn.close()


def _published(county: County) -> int:
    with county.sessions() as s:
        return int(s.execute(select(func.count()).select_from(OutboxEvent)
                             .where(OutboxEvent.published_at.is_not(None))).scalar_one())


def broker_faults_trial(county: County, rabbit: PrivateRabbit, events: int) -> dict[str, int]:
    """Publish ``events`` outbox events through the real publisher while the broker is
    restarted at a third and killed at two thirds; return the counts."""
    _bind_sink(rabbit.url)
    with county.sessions() as s:
        for i in range(events):
            outbox.emit(s, outbox.Topic.STUDY_ARRIVED, {"study_instance_uid": f"1.2.826.0.1.{i}", "site": "t"})
        s.commit()
    publisher = EventPublisher(rabbit.url, county.sessions, retention_hours=-1)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for fraction, fault in ((1, rabbit.restart), (2, rabbit.kill)):
            wait_for(f"{fraction}/3 of the events published", lambda f=fraction: _published(county) >= events * f // 3,
                     timeout=600)
            assert _published(county) < events, "publishing ended before the fault: nothing was tested"
            fault()
        wait_for("every event published", lambda: _published(county) == events, timeout=600)
    finally:
        stop.set()
        thread.join(timeout=60)
    with county.sessions() as s:
        ids = [f"relay-event-{i}" for i in s.execute(select(OutboxEvent.id)
                                                     .where(OutboxEvent.published_at.is_not(None))).scalars()]
    seen = _drain(rabbit.url)
    lost = [i for i in ids if seen[i] == 0]
    return {"published": len(ids), "in_queue": len(seen), "lost": len(lost),
            "duplicates": sum(n - 1 for n in seen.values() if n > 1)}


def test_events_confirmed_by_a_broker_that_restarts_and_crashes_are_all_in_the_queue(
        county: County, rabbit: PrivateRabbit) -> None:
    counts = broker_faults_trial(county, rabbit, EVENTS)
    assert counts["published"] == EVENTS
    assert counts["lost"] == 0, counts
    assert counts["in_queue"] == EVENTS, counts

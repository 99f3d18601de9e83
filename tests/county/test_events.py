"""Domain events: written with the change, published to RabbitMQ with confirms."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pika
import pytest
from sqlalchemy import func, select

from relay.county.db.engine import session_scope
from relay.county.db.models import OutboxEvent
from relay.county.events.outbox import Topic, emit
from relay.county.clock import now_utc
from relay.county.events.publisher import EXCHANGE, PRUNE_BATCH, EventPublisher
from relay.dicom.vocab import Priority
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site


@pytest.fixture
def listener(amqp_url):
    """A private queue bound to every event on the exchange (``#``)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = f"test-events-{uuid.uuid4().hex[:8]}"
    ch.queue_declare(queue, exclusive=True)
    ch.queue_bind(queue, EXCHANGE, routing_key="#")
    yield ch, queue
    conn.close()


def drain(ch, queue) -> list[tuple[str, dict, str]]:
    got = []
    while (message := ch.basic_get(queue, auto_ack=True))[0] is not None:
        method, props, body = message
        got.append((method.routing_key, json.loads(body), props.message_id))
    return got


def test_a_new_study_and_its_escalation_are_published_once(county, amqp_url, listener):
    site_id, _ = make_site(county, "qingshan")
    ds = make_dataset(Modality="DX")
    index(county, ingest(county, encode(ds), site_id=site_id))
    late = make_dataset(StudyInstanceUID=ds.StudyInstanceUID, Modality="DX")
    index(county, ingest(county, encode(late), site_id=site_id, priority=Priority.STAT))
    another_stat = make_dataset(StudyInstanceUID=ds.StudyInstanceUID, Modality="DX")
    index(county, ingest(county, encode(another_stat), site_id=site_id, priority=Priority.STAT))
    publisher = EventPublisher(amqp_url, county.sessions)
    assert publisher.publish_pending() == 2
    assert publisher.publish_pending() == 0
    publisher.close()
    got = drain(*listener)
    assert [(key, body["priority"]) for key, body, _ in got] == [("study.arrived", "routine"),
                                                                 ("study.escalated", "stat")]
    assert all(body["study_instance_uid"] == ds.StudyInstanceUID and body["site"] == "qingshan"
               for _, body, _ in got)
    assert len({message_id for _, _, message_id in got}) == 2


def of_study(got: list[tuple[str, dict, str]], study_uid: str) -> list[tuple[str, dict, str]]:
    """The events of one study (the exchange is shared with other test runs on this broker)."""
    return [e for e in got if e[1].get("study_instance_uid") == study_uid]


def publish_all(county, amqp_url) -> None:
    publisher = EventPublisher(amqp_url, county.sessions)
    try:
        for _ in range(10):  # bounded: a handful of events, one batch
            if publisher.publish_pending() == 0:
                return
    finally:
        publisher.close()


def test_a_study_read_signed_and_delivered_publishes_each_event_once(county, amqp_url, listener):
    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from tests.county.test_delivery import signed_study, site_token

    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, critical=True)  # arrived, claimed, signed (critical), SR/PDF built
        edge = site_token(county)
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        for _ in range(2):  # the edge's confirmation is sent again (a lost answer): one event
            assert client.post(f"/api/edges/reports/{item['delivery_id']}/delivered", json={"detail": "TOWNPACS"},
                               headers=edge).status_code == 204
    publish_all(county, amqp_url)
    got = of_study(drain(*listener), uid)
    assert sorted(key for key, _, _ in got) == sorted(
        ["study.arrived", "study.assigned", "study.signed", "critical.result", "report.delivered"])
    assigned = next(body for key, body, _ in got if key == "study.assigned")
    assert assigned == {"study_instance_uid": uid, "reader": "dr.wang", "actor": "dr.wang"}
    assert len({message_id for _, _, message_id in got}) == len(got)


def test_an_automatic_assignment_is_published_once_though_its_task_runs_twice(county, amqp_url, listener):
    from relay.county.db.models import Study
    from relay.county.jobs import ASSIGN_TASK
    from tests.county.test_assign import reader
    from tests.county.test_delivery import run_task

    site_id, _ = make_site(county)
    reader(county, "dr.li")
    ds = make_dataset(Modality="DX")
    index(county, ingest(county, encode(ds), site_id=site_id))
    with county.sessions() as s:
        study_id = s.execute(select(Study.id)).scalar_one()
    for _ in range(2):
        run_task(county, ASSIGN_TASK, study_id)
    publish_all(county, amqp_url)
    assert [(key, body.get("reader")) for key, body, _ in of_study(drain(*listener), ds.StudyInstanceUID)] == [
        ("study.arrived", None), ("study.assigned", "dr.li")]


def test_an_event_of_a_rolled_back_change_never_exists(county):
    with session_scope(county.sessions) as s:
        emit(s, Topic.STUDY_ARRIVED, {"study_instance_uid": "1.2.3"})
        s.rollback()
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 0


def test_events_wait_in_the_outbox_while_the_broker_is_unreachable(county, listener, amqp_url):
    with session_scope(county.sessions) as s:
        emit(s, Topic.STUDY_ARRIVED, {"study_instance_uid": "1.2.3"})
        s.commit()
    dead = EventPublisher("amqp://guest:guest@127.0.0.1:1/%2F", county.sessions)
    with pytest.raises(Exception):
        dead.publish_pending()
    with county.sessions() as s:
        assert s.execute(select(OutboxEvent.published_at)).scalar_one() is None
    assert EventPublisher(amqp_url, county.sessions).publish_pending() == 1
    assert [key for key, _, _ in drain(*listener)] == ["study.arrived"]


def _event(county, *, created_days_ago: float, published_days_ago: float | None, topic: str = "study.arrived") -> int:
    now = now_utc()
    with session_scope(county.sessions) as s:
        event = OutboxEvent(topic=topic, payload="{}", created_at=now - timedelta(days=created_days_ago),
                            published_at=None if published_days_ago is None
                            else now - timedelta(days=published_days_ago))
        s.add(event)
        s.commit()
        return event.id


def _remaining(county) -> set[int]:
    with county.sessions() as s:
        return set(s.execute(select(OutboxEvent.id)).scalars())


def test_published_events_past_the_retention_are_deleted_unpublished_ones_never(county, amqp_url):
    old_published = _event(county, created_days_ago=9, published_days_ago=8)
    recent = _event(county, created_days_ago=9, published_days_ago=1)  # the broker was down a week
    never_published = _event(county, created_days_ago=30, published_days_ago=None)
    publisher = EventPublisher(amqp_url, county.sessions, retention_hours=7 * 24)
    assert publisher.prune_published() == 1
    assert _remaining(county) == {recent, never_published}


def test_retention_deletes_in_bounded_batches(county, amqp_url):
    now = now_utc()
    with session_scope(county.sessions) as s:
        s.add_all(OutboxEvent(topic="study.arrived", payload="{}", created_at=now - timedelta(days=9),
                              published_at=now - timedelta(days=8)) for _ in range(PRUNE_BATCH + 5))
        s.commit()
    publisher = EventPublisher(amqp_url, county.sessions, retention_hours=24)
    assert [publisher.prune_published() for _ in range(3)] == [PRUNE_BATCH, 5, 0]
    assert _remaining(county) == set()


def test_a_negative_retention_keeps_every_event(county, amqp_url):
    kept = _event(county, created_days_ago=400, published_days_ago=399)
    assert EventPublisher(amqp_url, county.sessions, retention_hours=-1).prune_published() == 0
    assert _remaining(county) == {kept}


def test_the_running_publisher_applies_the_retention(county, amqp_url, listener):
    old_published = _event(county, created_days_ago=9, published_days_ago=8)
    with session_scope(county.sessions) as s:
        emit(s, Topic.STUDY_ARRIVED, {"study_instance_uid": "1.2.3"})
        s.commit()
    stop = threading.Event()
    thread = threading.Thread(target=EventPublisher(amqp_url, county.sessions, retention_hours=168).run,
                              args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (old_published in _remaining(county) or _unpublished(county)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
    assert old_published not in _remaining(county)
    assert _unpublished(county) == 0
    assert [key for key, _, _ in drain(*listener)] == ["study.arrived"]


def _unpublished(county) -> int:
    with county.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(OutboxEvent)
                            .where(OutboxEvent.published_at.is_(None))))

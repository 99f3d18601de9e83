"""At-least-once delivery: every county task, run twice through the real Celery app on
PostgreSQL and SeaweedFS's S3, leaves the same rows and the same objects as run once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from relay.county.app import create_app
from relay.county.db.models import Base, OutboxEvent, Report, Study
from relay.county.jobs import ASSIGN_TASK, DELIVER_TASK, INDEX_TASK, RENDER_TASK, QUEUES, ROUTES
from tests.county.test_assign import reader
from tests.county.test_delivery import run_task, signed_study
from tests.county.test_index import index, ingest
from tests.county.test_reading import queue_studies
from tests.factories import encode, make_dataset, make_site


def snapshot(county) -> tuple[dict[str, int], dict[str, str]]:
    """Row counts of every table, and every object in the bucket with its SHA-256."""
    with county.sessions() as s:
        rows = {t.name: int(s.scalar(select(func.count()).select_from(t))) for t in Base.metadata.sorted_tables}
    store = county.store
    objects = {o.object_name: hashlib.sha256(store.get(o.object_name)).hexdigest()
               for o in store.client.list_objects(store.bucket, recursive=True)}
    return rows, objects


def _an_instance(county) -> int:
    site_id, _ = make_site(county)
    return ingest(county, encode(make_dataset()), site_id=site_id)


def _an_indexed_instance(county) -> int:
    instance_id = _an_instance(county)
    index(county, instance_id)
    return instance_id


def _a_queued_study_and_a_reader(county) -> int:
    queue_studies(county, 1)
    reader(county, "dr.li")
    with county.sessions() as s:
        return int(s.execute(select(Study.id)).scalar_one())


def _a_signed_report(county) -> int:
    with TestClient(create_app(county)) as client:
        signed_study(client, county, deliver=False)
    with county.sessions() as s:
        return int(s.execute(select(Report.id)).scalar_one())


SETUPS: dict[str, tuple[Callable[..., int], str]] = {
    INDEX_TASK: (_an_instance, "studies"),
    RENDER_TASK: (_an_indexed_instance, "render_results"),
    ASSIGN_TASK: (_a_queued_study_and_a_reader, "outbox_events"),  # the study.assigned event
    DELIVER_TASK: (_a_signed_report, "instances"),  # the SR and the Encapsulated PDF
}


def test_every_registered_task_is_covered():
    assert set(SETUPS) == set(ROUTES) and set(ROUTES.values()) == set(QUEUES)


@pytest.mark.parametrize("task", list(SETUPS), ids=[ROUTES[t] for t in SETUPS])
def test_a_task_run_twice_leaves_the_same_rows_and_objects(county, task):
    setup, grows = SETUPS[task]
    item_id = setup(county)
    before = snapshot(county)
    run_task(county, task, item_id)
    once = snapshot(county)
    run_task(county, task, item_id)
    twice = snapshot(county)
    assert once[0][grows] > before[0][grows]  # the first run did its work
    assert twice == once
    assert once[0]["task_attempts"] == 0  # done: nothing left counted or dead


def test_the_deliver_task_stores_the_renderings_once_under_their_keys(county):
    report_id = _a_signed_report(county)
    before = snapshot(county)[1]
    run_task(county, DELIVER_TASK, report_id)
    run_task(county, DELIVER_TASK, report_id)
    added = set(snapshot(county)[1]) - set(before)
    with county.sessions() as s:
        (study_uid,) = s.execute(select(Study.study_uid)).scalars()
    assert {k for k in added if k.startswith("reports/")} == {f"reports/{study_uid}/1/report.pdf"}
    assert len(added) == 3  # and the SR and the Encapsulated PDF once each, as instances of the study


def test_the_assign_task_emits_study_assigned_once_with_the_reader_and_no_patient_data(county):
    study_id = _a_queued_study_and_a_reader(county)
    run_task(county, ASSIGN_TASK, study_id)
    run_task(county, ASSIGN_TASK, study_id)
    with county.sessions() as s:
        (payload,) = s.execute(select(OutboxEvent.payload).where(OutboxEvent.topic == "study.assigned")).scalars()
    assert '"reader": "dr.li"' in payload and '"actor": "auto"' in payload
    assert "TEST^PATIENT" not in payload and "T0001" not in payload

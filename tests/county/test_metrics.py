"""/metrics: what Prometheus scrapes, computed from the shared database and broker."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.reading import service
from relay.county.worker import enqueue_index
from tests.county.test_reading import principal, queue_studies


def scrape(county) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with TestClient(create_app(county)) as client:
        body = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_count_studies_instances_queue_depth_and_assignment_times(county):
    uids = queue_studies(county, 3)
    reader = principal(county, "dr.wang")
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=reader, study_uid=uids[0])
    enqueue_index(county.celery, county.settings, 12345)  # one message waiting in the ingest queue
    m = scrape(county)
    assert m[("relay_instances_received_total", (("site", "township-a"),))] == 3
    assert m[("relay_studies", (("priority", "routine"), ("state", "queued")))] == 2
    assert m[("relay_studies", (("priority", "routine"), ("state", "assigned")))] == 1
    assert m[("relay_work_queue_messages", (("queue", "ingest"),))] == 1
    assert m[("relay_tat_arrival_to_assignment_seconds_count", (("priority", "routine"),))] == 1
    assert m[("relay_tat_arrival_to_assignment_seconds_bucket", (("le", "60.0"), ("priority", "routine")))] == 1
    assert m[("relay_dead_letters", ())] == 0

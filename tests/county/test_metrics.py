"""/metrics: what Prometheus scrapes, computed from the shared database and broker."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import case, func, insert, select, text

from relay.config import Settings
from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.migrate import upgrade
from relay.county.db.models import Instance, OutboxEvent, Patient, Site, Study, StudyTransition, TaskAttempt
from relay.county.ingest import repository as ingest_repository
from relay.county.ingest.service import Upload, ingest_instance
from relay.county.metrics.collector import TAT_BUCKETS_S
from relay.county.reading import service
from relay.county.tat.service import STAGES
from relay.county.jobs import enqueue_index
from relay.dicom import wire
from relay.dicom.vocab import Priority, Role
from tests.county.test_delivery import signed_study
from tests.county.test_index import index, ingest
from tests.county.test_ingest import conflicting_pair, upload
from tests.county.test_reading import principal, queue_studies
from tests.county.test_reports import login
from tests.factories import encode, make_dataset, make_instance, make_site, sha256
from tests.county.test_public_surface import scrape_text

Key = tuple[str, tuple[tuple[str, str], ...]]


def scrape(county) -> dict[Key, float]:
    with TestClient(create_app(county)) as client:
        body = scrape_text(client, county)
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


def _from_tables(county) -> dict[Key, float]:
    """The figures counted straight from the tables, as the collector did before migration 0022."""
    out: dict[Key, float] = {}
    with county.sessions() as s:
        for site, n, size in s.execute(select(Site.name, func.count(), func.sum(Instance.size))
                                       .join(Site, Site.id == Instance.site_id).group_by(Site.name)):
            out[("relay_instances_received_total", (("site", site),))] = n
            out[("relay_instance_bytes_received_total", ())] = out.get(("relay_instance_bytes_received_total", ()),
                                                                       0) + size
        for state, priority, n in s.execute(select(Study.state, Study.priority, func.count())
                                            .group_by(Study.state, Study.priority)):
            out[("relay_studies", (("priority", priority), ("state", state)))] = n
        d = func.date_part("epoch", Study.tat_assigned_at - Study.tat_arrived_at)
        for row in s.execute(select(Study.priority, func.count(d), *(func.count(case((d <= le, 1)))
                                                                      for le in TAT_BUCKETS_S))
                             .where(Study.tat_assigned_at.is_not(None)).group_by(Study.priority)):
            name = "relay_tat_arrival_to_assignment_seconds"
            out[(f"{name}_count", (("priority", row[0]),))] = row[1]
            for le, n in zip(TAT_BUCKETS_S, row[2:], strict=True):
                out[(f"{name}_bucket", (("le", str(float(le))), ("priority", row[0])))] = n
    return out


def _counted(scraped: dict[Key, float]) -> dict[Key, float]:
    """The scraped figures the tables can be counted for (non-zero, so that a gauge of an
    emptied state, reported as 0, compares with the state's absence from the table)."""
    names = ("relay_instances_received_total", "relay_instance_bytes_received_total", "relay_studies",
             "relay_tat_arrival_to_assignment_seconds_count", "relay_tat_arrival_to_assignment_seconds_bucket")
    return {k: v for k, v in scraped.items() if k[0] in names and v != 0 and ("le", "+Inf") not in k[1]}


def _index_pending(county) -> None:
    with county.sessions() as s:
        pending = s.execute(select(Instance.id).where(Instance.indexed_at.is_(None)).order_by(Instance.id)).scalars().all()
    for instance_id in pending:
        index(county, instance_id)


def test_the_counters_equal_the_tables_after_ingests_state_changes_and_a_redelivery(county):
    """Real uploads over HTTP from two townships, a re-delivered instance, a conflicting one,
    an ingest that rolled back, claims, a signature, a reopening addition and an escalation:
    at every scrape the kept counters equal the figures counted from the tables."""
    site_a, token_a = make_site(county, "township-a")
    _site_b, token_b = make_site(county, "township-b")
    county._test_site = site_a  # type: ignore[attr-defined]  # queue_studies' township
    first, original, conflicting = conflicting_pair()
    two = make_dataset(StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID)
    stat_later = make_dataset()
    with TestClient(create_app(county)) as client:
        for token, data, priority in ((token_a, original, "routine"), (token_a, encode(two), "routine"),
                                      (token_a, encode(stat_later), "routine"),
                                      (token_b, encode(make_dataset()), "urgent"),
                                      (token_b, encode(make_dataset()), "stat")):
            assert upload(client, token, data, **{wire.HEADER_PRIORITY: priority}).json()["outcome"] == "stored"
        assert upload(client, token_a, original).json()["outcome"] == "duplicate"
        assert upload(client, token_a, conflicting).json()["outcome"] == "quarantined"
        with county.sessions() as s:  # an ingest whose transaction rolls back counts nothing
            row = s.get(Instance, 1)
            values = {c.name: getattr(row, c.name) for c in Instance.__table__.columns if c.name != "id"}
            ingest_repository.insert_instance(s, {**values, "sop_uid": "2.25.1", "size": 10**9})
            s.rollback()
        _index_pending(county)
        assert _counted(scrape(county)) == _from_tables(county)

        signed_uid = signed_study(client, county)  # a fourth township-a study: claimed, opened, signed
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        assert client.post(f"/api/worklist/{first.StudyInstanceUID}/claim", headers=dr).status_code == 200
        index(county, ingest(county, encode(make_dataset(StudyInstanceUID=signed_uid)),
                             site_id=site_a))  # an addition: reopens the signed study
        index(county, ingest(county, encode(make_dataset(StudyInstanceUID=stat_later.StudyInstanceUID)),
                             site_id=site_a, priority=Priority.STAT))  # escalates a queued study
    scraped = scrape(county)
    assert _counted(scraped) == _from_tables(county)
    assert scraped[("relay_studies", (("priority", "stat"), ("state", "queued")))] == 2
    assert scraped[("relay_instances_received_total", (("site", "township-b"),))] == 2


def _upload(data: bytes) -> Upload:
    return Upload(data=data, claimed_sha256=sha256(data), priority=Priority.ROUTINE, calling_ae="M1",
                  edge_received_at=None)


def test_two_ingests_of_one_township_do_not_wait_on_each_other_and_both_count(county):
    """While one ingest of a township is uncommitted, another of the same township commits
    at once (no shared counter row to wait on: lock_timeout would raise), and both count."""
    site_id, _ = make_site(county, "township-a")
    with county.sessions() as held:
        site = held.get(Site, site_id)
        ingest_instance(session=held, store=county.store, site=site, upload=_upload(make_instance()), max_bytes=10**8)
        row = held.execute(text("SELECT * FROM instances")).mappings().one()
        ingest_repository.insert_instance(held, {**{k: v for k, v in row.items() if k != "id"},
                                                 "sop_uid": "2.25.7", "size": 70})  # left uncommitted
        with county.sessions() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            ingest_instance(session=other, store=county.store, site=other.get(Site, site_id),
                            upload=_upload(make_instance()), max_bytes=10**8)
        held.commit()
    m = scrape(county)
    assert m[("relay_instances_received_total", (("site", "township-a"),))] == 3


def test_the_embedded_sqlite_county_serves_the_same_counters(tmp_path):
    """relay up's SQLite runs migration 0022's SQLite triggers: /metrics counts as on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    embedded = County(Settings(data_dir=tmp_path / "var", database_url=url, broker_url=None))
    try:
        site_id, _ = make_site(embedded, "township-a")
        for priority in (Priority.ROUTINE, Priority.ROUTINE, Priority.STAT):
            index(embedded, ingest(embedded, encode(make_dataset()), site_id=site_id, priority=priority))
        with session_scope(embedded.sessions) as s:
            study = s.execute(select(Study).where(Study.priority == "stat")).scalar_one()
            study.state = "assigned"
            at = study.tat_arrived_at + timedelta(seconds=300)  # exactly on a bound: le=300 holds it
            s.add(StudyTransition(study_pk=study.id, state="assigned", actor="auto", at=at))
            for state, after_s in (("reading", 300), ("signed", 900), ("delivered", 1800), ("acknowledged", 3600)):
                at += timedelta(seconds=after_s)  # each stage exactly on a bucket bound
                s.add(StudyTransition(study_pk=study.id, state=state, actor="dr.wang", at=at))
            s.commit()
            size = s.scalar(select(func.sum(Instance.size)))
        m = scrape(embedded)
    finally:
        embedded.close()
    assert m[("relay_instances_received_total", (("site", "township-a"),))] == 3
    assert m[("relay_instance_bytes_received_total", ())] == size
    assert m[("relay_studies", (("priority", "routine"), ("state", "queued")))] == 2
    assert m[("relay_studies", (("priority", "stat"), ("state", "assigned")))] == 1
    assert m[("relay_studies", (("priority", "stat"), ("state", "queued")))] == 0
    assert m[("relay_tat_arrival_to_assignment_seconds_bucket", (("le", "60.0"), ("priority", "stat")))] == 0
    assert m[("relay_tat_arrival_to_assignment_seconds_bucket", (("le", "300.0"), ("priority", "stat")))] == 1
    assert m[("relay_tat_arrival_to_assignment_seconds_sum", (("priority", "stat"),))] == 300
    for stage, le in (("until_opened", 300), ("reading", 900), ("signed_to_township", 1800),
                      ("until_acknowledged", 3600)):
        labels = (("priority", "stat"), ("stage", stage))
        assert m[("relay_tat_stage_seconds_bucket", (("le", str(float(le))), *labels))] == 1, stage
        assert m[("relay_tat_stage_seconds_sum", labels)] == le


STATES = ("arrived", "queued", "assigned", "reading", "signed", "delivered", "acknowledged")


def _stage_history(now: datetime) -> tuple[dict[str, list[dict[str, object]]], list[dict[str, object]]]:
    """Rows of 300 studies (most arrived in the last 24 hours, some earlier) and, per study,
    its priority, whether it is in the window, and its true milestones."""
    rng = random.Random(22)
    rows: dict[str, list[dict[str, object]]] = {"patients": [], "studies": [], "transitions": [], "instances": []}
    truth: list[dict[str, object]] = []
    for i in range(300):
        pk, priority = i + 1, ("stat", "urgent", "routine")[i % 3]
        in_window = i % 10 != 0  # one in ten arrived 25 to 40 hours ago
        arrived = now - timedelta(hours=rng.uniform(25, 40) if not in_window else rng.uniform(0.1, 23))
        edge = arrived - timedelta(seconds=rng.lognormvariate(math.log(240), 1.0))
        stamps = {"received_at_edge": edge, "arrived": arrived}
        reached = len(STATES) if i % 7 else rng.randrange(1, len(STATES))  # some still under way
        at = arrived
        for state in STATES[1:reached]:  # gaps from under a second to several days
            at += timedelta(seconds=rng.lognormvariate(math.log(1500), 1.6), microseconds=rng.randrange(10**6))
            stamps[state] = at
        if i == 1:  # durations exactly on bounds: 300 s waiting for a reader, 1800 s reading
            stamps.update({state: arrived + timedelta(seconds=sec)
                           for state, sec in (("queued", 1), ("assigned", 300), ("reading", 400), ("signed", 2200),
                                            ("delivered", 2260), ("acknowledged", 3000))})
        if i == 2:  # the edge did not say when it received the study
            del stamps["received_at_edge"]
        rows["patients"].append({"id": pk, "patient_id": f"P{pk}", "issuer": "x", "name": "", "birth_date": "",
                                 "sex": ""})
        rows["studies"].append({"id": pk, "study_uid": f"2.25.8{pk}", "patient_pk": pk, "site_id": 1,
                                "accession_number": "", "study_date": "", "study_time": "", "description": "",
                                "modalities": "CT", "priority": priority, "state": STATES[reached - 1],
                                "created_at": arrived, "updated_at": at})
        rows["transitions"] += [{"study_pk": pk, "state": state, "at": stamps[state], "actor": "dr.wang", "detail": ""}
                                for state in STATES if state in stamps]
        rows["instances"].append({"sop_uid": f"2.25.8{pk}.1", "sha256": f"{pk:064x}", "sop_class_uid": "1.2",
                                  "study_uid": f"2.25.8{pk}", "series_uid": "1.2", "object_key": f"k{pk}",
                                  "size": 1, "site_id": 1, "priority": priority, "calling_ae": "",
                                  "edge_received_at": stamps.get("received_at_edge"), "received_at": arrived})
        truth.append({"priority": priority, "in_window": in_window, "stamps": stamps})
    return rows, truth


def test_the_stage_histogram_counts_the_last_day_as_computed_from_the_milestones(county):
    """Buckets (le: a duration on a bound counts in it), _count and _sum of every stage and
    priority equal the figures computed here from the generated times; a study missing a
    milestone is not observed in the stages it bounds; studies older than 24 hours are not."""
    make_site(county, "township-a")
    rows, truth = _stage_history(datetime.now(UTC))
    with county.sessions() as s:
        for model, key in ((Patient, "patients"), (Study, "studies"), (StudyTransition, "transitions"),
                           (Instance, "instances")):
            s.execute(insert(model), rows[key])
        s.commit()
    m = scrape(county)
    observed = 0
    for name, a, b in STAGES:
        for priority in ("stat", "urgent", "routine"):
            d = [(t["stamps"][b] - t["stamps"][a]).total_seconds() for t in truth
                 if t["priority"] == priority and t["in_window"] and a in t["stamps"] and b in t["stamps"]]
            labels = (("priority", priority), ("stage", name))
            for le in TAT_BUCKETS_S:
                key = ("relay_tat_stage_seconds_bucket", (("le", str(float(le))), *labels))
                assert m[key] == sum(x <= le for x in d), key
            assert m[("relay_tat_stage_seconds_bucket", (("le", "+Inf"), *labels))] == len(d)
            assert m[("relay_tat_stage_seconds_count", labels)] == len(d)
            assert m[("relay_tat_stage_seconds_sum", labels)] == pytest.approx(math.fsum(d), rel=1e-12, abs=1e-6)
            observed += len(d)
    assert observed > 1000
    bounded = truth[1]["stamps"]
    assert ((bounded["assigned"] - bounded["arrived"]).total_seconds(),
            (bounded["signed"] - bounded["reading"]).total_seconds()) == (300, 1800)


def test_quarantine_dead_letters_and_unpublished_events_are_counted(county):
    """The operations gauges count only what needs a look: a quarantined upload, a task that
    gave up (not one still retrying), an event not yet sent (not one already sent)."""
    _site, token = make_site(county, "township-a")
    _first, original, conflicting = conflicting_pair()
    with TestClient(create_app(county)) as client:
        assert upload(client, token, original).json()["outcome"] == "stored"
        assert upload(client, token, conflicting).json()["outcome"] == "quarantined"
    now = datetime.now(UTC)
    with county.sessions() as s:
        unpublished = s.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None)))
        s.add_all([TaskAttempt(task="index", key="1", attempts=5, first_attempt_at=now, last_attempt_at=now, dead_at=now),
                   TaskAttempt(task="index", key="2", attempts=1, first_attempt_at=now, last_attempt_at=now),
                   OutboxEvent(topic="t", payload="{}", created_at=now),
                   OutboxEvent(topic="t", payload="{}", created_at=now, published_at=now)])
        s.commit()
    m = scrape(county)
    assert (m[("relay_quarantined_instances", ())], m[("relay_dead_letters", ())],
            m[("relay_events_unpublished", ())]) == (1, 1, unpublished + 1)

"""A Prometheus collector over the county's shared state.

Nothing is counted in process memory: every figure is read from PostgreSQL (and the
broker's queue depths) when Prometheus scrapes, so every API replica reports the
same numbers and a restart loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from relay.county.context import County
from relay.county.db.models import (
    EdgeHealth,
    Instance,
    OutboxEvent,
    QuarantinedInstance,
    Site,
    Study,
    StudyTransition,
    TaskAttempt,
)

log = logging.getLogger(__name__)

TAT_BUCKETS_S = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800)
"""Arrival-to-queue-exit histogram buckets, in seconds: 1 min to 2 days (SLA: 30 min / 2 h / 24 h)."""


class CountyCollector(Collector):
    """Yields the county's metrics on each scrape."""

    def __init__(self, county: County) -> None:
        self.county = county

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self.county.sessions() as session:
            yield from _ingest(session)
            yield from _studies(session)
            yield from _edges(session)
            yield from _operations(session)
            yield from _arrival_to_assignment(session)
        yield from _queue_depths(self.county)


def _ingest(session: Session) -> Iterator[CounterMetricFamily]:
    stored = CounterMetricFamily("relay_instances_received", "Instances the county holds, by site.",
                                 labels=["site"])
    rows = session.execute(select(Site.name, func.count(Instance.id)).join(Instance, Instance.site_id == Site.id)
                           .group_by(Site.name))
    for site, n in rows:
        stored.add_metric([site], n)
    yield stored
    size = CounterMetricFamily("relay_instance_bytes_received", "Bytes of instances the county holds.")
    size.add_metric([], session.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0)
    yield size


def _studies(session: Session) -> Iterator[GaugeMetricFamily]:
    by_state = GaugeMetricFamily("relay_studies", "Studies by state and priority.", labels=["state", "priority"])
    for state, priority, n in session.execute(select(Study.state, Study.priority, func.count())
                                              .group_by(Study.state, Study.priority)):
        by_state.add_metric([state, priority], n)
    yield by_state


def _edges(session: Session) -> Iterator[GaugeMetricFamily]:
    now = datetime.now(UTC)
    families = {
        "spool": GaugeMetricFamily("relay_edge_spool_instances", "Instances waiting at the edge.", labels=["site"]),
        "bytes": GaugeMetricFamily("relay_edge_spool_bytes", "Bytes waiting at the edge.", labels=["site"]),
        "oldest": GaugeMetricFamily("relay_edge_oldest_unsent_seconds", "Age of the oldest unsent instance.", labels=["site"]),
        "silence": GaugeMetricFamily("relay_edge_seconds_since_heartbeat", "Seconds since the last heartbeat.", labels=["site"]),
        "disk": GaugeMetricFamily("relay_edge_disk_free_bytes", "Free disk at the edge.", labels=["site"]),
        "clock": GaugeMetricFamily("relay_edge_clock_offset_seconds", "County clock minus edge clock.", labels=["site"]),
    }
    for site, h in session.execute(select(Site.name, EdgeHealth).join(EdgeHealth, EdgeHealth.site_id == Site.id)):
        families["spool"].add_metric([site], h.spool_instances)
        families["bytes"].add_metric([site], h.spool_bytes)
        families["oldest"].add_metric([site], h.oldest_unsent_age_s or 0)
        families["silence"].add_metric([site], (now - h.received_at).total_seconds())
        families["disk"].add_metric([site], h.disk_free_bytes or 0)
        families["clock"].add_metric([site], h.clock_offset_s)
    yield from families.values()


def _operations(session: Session) -> Iterator[GaugeMetricFamily]:
    for name, doc, model, where in (
        ("relay_quarantined_instances", "Conflicting uploads kept aside.", QuarantinedInstance, None),
        ("relay_dead_letters", "Work that gave up after its attempt cap.", TaskAttempt, TaskAttempt.dead_at.is_not(None)),
        ("relay_events_unpublished", "Domain events waiting in the outbox.", OutboxEvent, OutboxEvent.published_at.is_(None)),
    ):
        stmt = select(func.count()).select_from(model)
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], session.scalar(stmt.where(where) if where is not None else stmt) or 0)
        yield gauge


def _arrival_to_assignment(session: Session) -> Iterator[HistogramMetricFamily]:
    """Seconds from arrival at the county to first assignment, by priority (from transitions)."""
    arrived = (select(StudyTransition.study_pk, func.min(StudyTransition.at).label("t"))
               .where(StudyTransition.state == "arrived").group_by(StudyTransition.study_pk).subquery())
    assigned = (select(StudyTransition.study_pk, func.min(StudyTransition.at).label("t"))
                .where(StudyTransition.state == "assigned").group_by(StudyTransition.study_pk).subquery())
    rows = session.execute(select(Study.priority, arrived.c.t, assigned.c.t)
                           .join(arrived, arrived.c.study_pk == Study.id)
                           .join(assigned, assigned.c.study_pk == Study.id)).all()
    hist = HistogramMetricFamily("relay_tat_arrival_to_assignment_seconds",
                                 "Time from arrival at the county to assignment to a reader.", labels=["priority"])
    for priority in ("stat", "urgent", "routine"):
        waits = [(b - a).total_seconds() for p, a, b in rows if p == priority]
        buckets = [(str(float(le)), sum(1 for w in waits if w <= le)) for le in TAT_BUCKETS_S]
        hist.add_metric([priority], buckets + [("+Inf", len(waits))], sum_value=sum(waits))
    yield hist


def _queue_depths(county: County) -> Iterator[GaugeMetricFamily]:
    gauge = GaugeMetricFamily("relay_work_queue_messages", "Messages waiting in each county work queue.",
                              labels=["queue"])
    url = county.settings.broker_url or ""
    if url.startswith("amqp"):
        try:
            _amqp_depths(url, county, gauge)
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("queue depths unavailable: %s", type(exc).__name__)
    yield gauge


def _amqp_depths(url: str, county: County, gauge: GaugeMetricFamily) -> None:
    import pika

    from relay.county.worker import QUEUES, queue_name

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for kind in QUEUES:
            channel = conn.channel()
            try:
                declared = channel.queue_declare(queue_name(county.settings, kind), passive=True)
                gauge.add_metric([kind], declared.method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                gauge.add_metric([kind], 0)  # not declared yet: nothing waiting
    finally:
        conn.close()

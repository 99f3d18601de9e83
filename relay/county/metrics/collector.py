"""A Prometheus collector over the county's shared state.

Nothing is counted in process memory: every figure is read from PostgreSQL (and the
broker's queue depths) when Prometheus scrapes, so every API replica reports the
same numbers and a restart loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Float, case, func, select
from sqlalchemy.orm import Session

from relay.county.context import County
from relay.county.db.models import (
    EdgeHealth,
    Instance,
    OutboxEvent,
    QuarantinedInstance,
    Site,
    Study,
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
            yield from _edges(session, timedelta(minutes=self.county.settings.edge_spool_alarm_minutes))
            yield from _operations(session)
            yield from _arrival_to_assignment(session)
            yield from _stage_times(session)
        yield from _queue_depths(self.county)


def _ingest(session: Session) -> Iterator[CounterMetricFamily]:
    """Instances and bytes the county holds, per site (one pass); rate() of these is the ingest rate."""
    stored = CounterMetricFamily("relay_instances_received", "Instances the county holds, by site.",
                                 labels=["site"])
    size = CounterMetricFamily("relay_instance_bytes_received", "Bytes of instances the county holds.")
    per_site = session.execute(select(Instance.site_id, func.count(), func.coalesce(func.sum(Instance.size), 0))
                               .group_by(Instance.site_id)).all()
    names = dict(session.execute(select(Site.id, Site.name)).tuples().all())
    for site_id, n, _bytes in per_site:
        stored.add_metric([names.get(site_id, str(site_id))], n)
    size.add_metric([], sum(int(b) for _s, _n, b in per_site))
    yield stored
    yield size


def _studies(session: Session) -> Iterator[GaugeMetricFamily]:
    by_state = GaugeMetricFamily("relay_studies", "Studies by state and priority.", labels=["state", "priority"])
    for state, priority, n in session.execute(select(Study.state, Study.priority, func.count())
                                              .group_by(Study.state, Study.priority)):
        by_state.add_metric([state, priority], n)
    yield by_state


def _edges(session: Session, spool_alarm_after: timedelta) -> Iterator[GaugeMetricFamily]:
    from relay.county.edges.service import SILENT_AFTER, alarms

    now = datetime.now(UTC)
    families = {
        "spool": GaugeMetricFamily("relay_edge_spool_instances", "Instances waiting at the edge.", labels=["site"]),
        "bytes": GaugeMetricFamily("relay_edge_spool_bytes", "Bytes waiting at the edge.", labels=["site"]),
        "oldest": GaugeMetricFamily("relay_edge_oldest_unsent_seconds", "Age of the oldest unsent instance.", labels=["site"]),
        "silence": GaugeMetricFamily("relay_edge_seconds_since_heartbeat", "Seconds since the last heartbeat.", labels=["site"]),
        "disk": GaugeMetricFamily("relay_edge_disk_free_bytes", "Free disk at the edge.", labels=["site"]),
        "clock": GaugeMetricFamily("relay_edge_clock_offset_seconds", "County clock minus edge clock.", labels=["site"]),
        "goodput": GaugeMetricFamily("relay_edge_goodput_bytes_per_second", "Bytes per second the edge "
                                     "delivered recently.", labels=["site"]),
        "alarm": GaugeMetricFamily("relay_edge_alarm", "1 while an edge has an alarm: silent (no heartbeat "
                                   "for 10 min) or spool_stale (an unsent instance older than the threshold).",
                                   labels=["site", "kind"]),
    }
    for site, h in session.execute(select(Site.name, EdgeHealth).join(EdgeHealth, EdgeHealth.site_id == Site.id)):
        families["spool"].add_metric([site], h.spool_instances)
        families["bytes"].add_metric([site], h.spool_bytes)
        families["oldest"].add_metric([site], h.oldest_unsent_age_s or 0)
        families["silence"].add_metric([site], (now - h.received_at).total_seconds())
        families["disk"].add_metric([site], h.disk_free_bytes or 0)
        families["clock"].add_metric([site], h.clock_offset_s)
        families["goodput"].add_metric([site], h.goodput_bps or 0)
        raised = alarms(silent=now - h.received_at > SILENT_AFTER, oldest_unsent_age_s=h.oldest_unsent_age_s,
                        last_heartbeat_at=h.received_at, now=now, spool_alarm_after=spool_alarm_after)
        for kind in ("silent", "spool_stale"):
            families["alarm"].add_metric([site, kind], int(kind in raised))
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


def _histogram_row(d: Any) -> list[Any]:
    """count(d <= le) for each bucket, count(d), sum(d): one pass, in the database."""
    return [*(func.count(case((d <= le, 1))) for le in TAT_BUCKETS_S), func.count(d), func.coalesce(func.sum(d), 0.0)]


def _add_histogram(hist: HistogramMetricFamily, labels: list[str], row: Any) -> None:
    buckets = [(str(float(le)), int(n)) for le, n in zip(TAT_BUCKETS_S, row[:len(TAT_BUCKETS_S)], strict=True)]
    hist.add_metric(labels, buckets + [("+Inf", int(row[-2]))], sum_value=float(row[-1]))


def _seconds(start: Any, end: Any) -> Any:
    return func.date_part("epoch", end - start, type_=Float)


def _arrival_to_assignment(session: Session) -> Iterator[HistogramMetricFamily]:
    """Seconds from arrival at the county to first assignment, by priority, over all studies
    (a true cumulative histogram: rate() over it gives recent assignments)."""
    d = _seconds(Study.tat_arrived_at, Study.tat_assigned_at)
    rows = {r[0]: r[1:] for r in session.execute(
        select(Study.priority, *_histogram_row(d)).where(Study.tat_assigned_at.is_not(None)).group_by(Study.priority))}
    hist = HistogramMetricFamily("relay_tat_arrival_to_assignment_seconds",
                                 "Time from arrival at the county to assignment to a reader.", labels=["priority"])
    empty = [0] * (len(TAT_BUCKETS_S) + 1) + [0.0]
    for priority in ("stat", "urgent", "routine"):
        _add_histogram(hist, [priority], rows.get(priority, empty))
    yield hist


RECENT_TAT = timedelta(hours=24)
"""Window of ``relay_tat_stage_seconds``: studies that arrived at the county this recently."""


def _stage_times(session: Session) -> Iterator[HistogramMetricFamily]:
    """Per stage and priority, durations of the studies that arrived in the last 24 hours.

    Not cumulative (studies leave the window): chart it with histogram_quantile() on the
    buckets as they are, not on rate()."""
    from relay.county.tat.repository import MILESTONES
    from relay.county.tat.service import STAGES

    hist = HistogramMetricFamily("relay_tat_stage_seconds", "Stage durations of the studies that arrived "
                                 "in the last 24 hours (not cumulative).", labels=["stage", "priority"])
    columns = [c for _n, a, b in STAGES for c in _histogram_row(_seconds(MILESTONES[a], MILESTONES[b]))]
    since = datetime.now(UTC) - RECENT_TAT
    rows = {r[0]: r[1:] for r in session.execute(
        select(Study.priority, *columns).where(Study.created_at >= since).group_by(Study.priority))}
    width = len(TAT_BUCKETS_S) + 2
    for priority in ("stat", "urgent", "routine"):
        row = rows.get(priority)
        for i, (name, _a, _b) in enumerate(STAGES):
            part = list(row[i * width:(i + 1) * width]) if row else [0] * (width - 1) + [0.0]
            _add_histogram(hist, [name, priority], part)
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

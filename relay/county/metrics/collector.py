"""A Prometheus collector over the county's shared state.

Nothing is counted in process memory: every figure is read from PostgreSQL (and the
broker's queue depths) when Prometheus scrapes, so every API replica reports the
same numbers and a restart loses nothing. The figures over the whole history (instances
and bytes received, studies by state, arrival-to-assignment times) are counters the
database keeps itself (triggers, migration 0022; see relay.county.metrics.repository), so
a scrape costs the same at a thousand studies as at a hundred million instances.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.context import County
from relay.county.db.models import EdgeHealth, Site
from relay.county.edges.service import SILENT_AFTER, alarms
from relay.county.jobs import QUEUES, queue_name
from relay.county.metrics import repository
from relay.county.metrics.repository import Counters
from relay.county.tat.service import STAGES
from relay.dicom.vocab import Priority

log = logging.getLogger(__name__)

TAT_BUCKETS_S = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800)
"""Arrival-to-queue-exit histogram buckets, in seconds: 1 min to 2 days (SLA: 30 min / 2 h / 24 h).
The arrival-to-assignment buckets are counted by a trigger of migration 0022, which holds
a copy: changing these needs a migration that recreates it and recounts."""

PRIORITIES = tuple(p.value for p in Priority)


class CountyCollector(Collector):
    """Yields the county's metrics on each scrape."""

    def __init__(self, county: County) -> None:
        self.county = county

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self.county.sessions() as session:
            counters = repository.read_counters(session)  # read-only: the worker folds
            yield from _ingest(session, counters)
            yield from _studies(counters)
            yield from _edges(session, timedelta(minutes=self.county.settings.edge_spool_alarm_minutes))
            yield from _operations(session)
            yield from _arrival_to_assignment(counters)
            yield from _stage_times(session)
        yield from _queue_depths(self.county)


def _ingest(session: Session, counters: Counters) -> Iterator[CounterMetricFamily]:
    """Instances and bytes received, per site; rate() of these is the ingest rate. Counted
    when the instance row is inserted: a re-delivered duplicate inserts nothing."""
    stored = CounterMetricFamily("relay_instances_received", "Instances the county holds, by site.",
                                 labels=["site"])
    size = CounterMetricFamily("relay_instance_bytes_received", "Bytes of instances the county holds.")
    names = {str(row.id): row.name for row in session.execute(select(Site.id, Site.name))}
    for site_id, n in sorted(counters.get("instances", {}).items()):
        stored.add_metric([names.get(site_id, site_id)], n)
    size.add_metric([], sum(counters.get("instance_bytes", {}).values()))
    yield stored
    yield size


def _studies(counters: Counters) -> Iterator[GaugeMetricFamily]:
    """Studies by state and priority (a state and priority once held and now empty reports 0)."""
    by_state = GaugeMetricFamily("relay_studies", "Studies by state and priority.", labels=["state", "priority"])
    for labels, n in sorted(counters.get("studies", {}).items()):
        state, _, priority = labels.partition("|")
        by_state.add_metric([state, priority], n)
    yield by_state


def _edges(session: Session, spool_alarm_after: timedelta) -> Iterator[GaugeMetricFamily]:
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
    counts = repository.operation_counts(session)
    for name, doc in (
        ("relay_quarantined_instances", "Conflicting uploads kept aside."),
        ("relay_dead_letters", "Work that gave up after its attempt cap."),
        ("relay_events_unpublished", "Domain events waiting in the outbox."),
    ):
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], counts[name])
        yield gauge


def _add_histogram(hist: HistogramMetricFamily, labels: list[str], h: repository.Histogram) -> None:
    buckets = [(str(float(le)), n) for le, n in zip(TAT_BUCKETS_S, h.cumulative, strict=True)]
    hist.add_metric(labels, buckets + [("+Inf", h.count)], sum_value=h.sum_s)


def _arrival_to_assignment(counters: Counters) -> Iterator[HistogramMetricFamily]:
    """Seconds from arrival at the county to first assignment, by the priority the study had
    then, over all studies (a true cumulative histogram: rate() over it gives recent
    assignments; a later escalation does not move an observation, so no bucket decreases)."""
    hist = HistogramMetricFamily("relay_tat_arrival_to_assignment_seconds",
                                 "Time from arrival at the county to assignment to a reader.", labels=["priority"])
    per_bucket = counters.get("tat_assign", {})
    sums = counters.get("tat_assign_sum", {})
    for priority in PRIORITIES:
        counts = [int(per_bucket.get(f"{priority}|{le}", 0.0)) for le in (*TAT_BUCKETS_S, "inf")]
        cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
        _add_histogram(hist, [priority], repository.Histogram(cumulative[:-1], cumulative[-1],
                                                              sums.get(priority, 0.0)))
    yield hist


RECENT_TAT = timedelta(hours=24)
"""Window of ``relay_tat_stage_seconds``: studies that arrived at the county this recently."""


def _stage_times(session: Session) -> Iterator[HistogramMetricFamily]:
    """Per stage and priority, durations of the studies that arrived in the last 24 hours.

    Not cumulative (studies leave the window): chart it with histogram_quantile() on the
    buckets as they are, not on rate(). Read from the studies of the window (the index on
    created_at): its cost follows a day's studies, not the history."""
    hist = HistogramMetricFamily("relay_tat_stage_seconds", "Stage durations of the studies that arrived "
                                 "in the last 24 hours (not cumulative).", labels=["stage", "priority"])
    by_priority = repository.stage_histograms(session, since=datetime.now(UTC) - RECENT_TAT, stages=STAGES,
                                              buckets_s=TAT_BUCKETS_S)
    empty = repository.Histogram([0] * len(TAT_BUCKETS_S), 0, 0.0)
    for priority in PRIORITIES:
        histograms = by_priority.get(priority, [empty] * len(STAGES))
        for (name, _a, _b), h in zip(STAGES, histograms, strict=True):
            _add_histogram(hist, [name, priority], h)
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

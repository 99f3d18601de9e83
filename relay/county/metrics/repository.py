"""Queries of the metrics domain: the counters the database keeps for /metrics.

Triggers (migration 0022) append a row to ``metric_deltas`` in the transaction of every
change a figure depends on; writers never update a shared row, so concurrent ingests do
not wait on each other. The worker folds the pending deltas into ``metric_counters`` at an
interval (relay.county.metrics.folding); a scrape only reads, the counters plus the deltas
not folded yet, so it writes nothing and may run on a read replica. Its cost follows the
changes since the last fold, not the history.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from relay.county.db.models import MetricCounter, MetricDelta, OutboxEvent, QuarantinedInstance, Study, TaskAttempt
from relay.county.tat.repository import MILESTONES

Counters = dict[str, dict[str, float]]
"""name -> labels -> value, as kept in ``metric_counters`` (labels encoded as in the model)."""

_PG_FOLD = text("""
WITH moved AS (DELETE FROM metric_deltas RETURNING name, labels, value)
INSERT INTO metric_counters (name, labels, value)
SELECT name, labels, sum(value) FROM moved GROUP BY name, labels ORDER BY name, labels
ON CONFLICT (name, labels) DO UPDATE SET value = metric_counters.value + EXCLUDED.value""")
"""One statement, so a delta committed meanwhile is either moved whole or left for the next
fold; two replicas folding at once upsert in the same order (no deadlock) and the second
skips the rows the first deleted."""


def fold(session: Session) -> None:
    """Fold the pending deltas into the counters (the worker's periodic job); the caller commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_FOLD)
    else:
        _fold_sqlite(session)


def read_counters(session: Session) -> Counters:
    """Every counter, its pending deltas added, in one statement (one snapshot: a fold
    committing meanwhile is seen whole or not at all). Writes nothing."""
    both = union_all(select(MetricCounter.name, MetricCounter.labels, MetricCounter.value),
                     select(MetricDelta.name, MetricDelta.labels, MetricDelta.value)).subquery()
    out: Counters = defaultdict(dict)
    for row in session.execute(select(both.c.name, both.c.labels, func.sum(both.c.value).label("value"))
                               .group_by(both.c.name, both.c.labels)):
        out[row.name][row.labels] = float(row.value)
    return out


def _fold_sqlite(session: Session) -> None:
    """SQLite has one writer at a time: delete-returning and the upserts are one transaction."""
    moved: dict[tuple[str, str], float] = defaultdict(float)
    for row in session.execute(delete(MetricDelta).returning(MetricDelta.name, MetricDelta.labels,
                                                             MetricDelta.value)):
        moved[(row.name, row.labels)] += float(row.value)
    for (name, labels), value in sorted(moved.items()):
        stmt = sqlite.insert(MetricCounter).values(name=name, labels=labels, value=value)
        session.execute(stmt.on_conflict_do_update(index_elements=["name", "labels"],
                                                   set_={"value": MetricCounter.value + stmt.excluded.value}))


def _seconds(dialect: str, start: str, end: str) -> str:
    """SQL text of seconds from ``start`` to ``end``, as :func:`_duration_s` computes them
    (migration 0022's triggers hold a copy of the same formula)."""
    if dialect == "postgresql":
        return f"date_part('epoch', {end} - {start})"
    return f"(round((julianday({end}) - julianday({start})) * 86400000.0) / 1000.0)"


def _bucket(seconds: str, buckets_s: tuple[int, ...]) -> str:
    whens = " ".join(f"WHEN {seconds} <= {le} THEN '{le}'" for le in buckets_s)
    return f"(CASE {whens} ELSE 'inf' END)"


def rebuild_counters_unchecked(session: Session, *, buckets_s: tuple[int, ...]) -> None:
    """Recount every counter from the tables, as migration 0022 back-filled them.

    For after a bulk load that bypassed the triggers (``session_replication_role =
    replica``, as bench.dashboard seeds). Unchecked: a write committing during the recount
    may be counted twice or not at all, so run it with the writers stopped. It also
    resets the counters to the tables' figures, which Prometheus sees as a counter reset."""
    dialect = session.get_bind().dialect.name
    assigned = "tat_arrived_at IS NOT NULL AND tat_assigned_at IS NOT NULL"
    d = _seconds(dialect, "tat_arrived_at", "tat_assigned_at")
    session.execute(delete(MetricDelta))
    session.execute(delete(MetricCounter))
    session.execute(text(f"""
        INSERT INTO metric_counters (name, labels, value)
        SELECT 'instances', CAST(site_id AS TEXT), count(*) FROM instances GROUP BY site_id
        UNION ALL SELECT 'instance_bytes', CAST(site_id AS TEXT), sum(size) FROM instances GROUP BY site_id
        UNION ALL SELECT 'studies', state || '|' || priority, count(*) FROM studies GROUP BY state, priority
        UNION ALL SELECT 'tat_assign', priority || '|' || b, count(*)
          FROM (SELECT priority, {_bucket(d, buckets_s)} AS b FROM studies WHERE {assigned}) o GROUP BY priority, b
        UNION ALL SELECT 'tat_assign_sum', priority, sum({d}) FROM studies WHERE {assigned} GROUP BY priority"""))


def operation_counts(session: Session) -> dict[str, int]:
    """Quarantined instances, dead letters and unpublished events, in one round trip."""
    counts = {
        "relay_quarantined_instances": select(func.count()).select_from(QuarantinedInstance),
        "relay_dead_letters": select(func.count()).select_from(TaskAttempt).where(TaskAttempt.dead_at.is_not(None)),
        "relay_events_unpublished": select(func.count()).select_from(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None)),
    }
    row = session.execute(select(*(q.scalar_subquery().label(name) for name, q in counts.items()))).one()
    return {name: int(row[i]) for i, name in enumerate(counts)}


@dataclass(frozen=True)
class Histogram:
    """One histogram series as Prometheus exposes it."""

    cumulative: list[int]
    """Observations <= each bucket bound, in the order of the bounds."""
    count: int
    sum_s: float


def _duration_s(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    if dialect == "postgresql":
        # date_part is float8; EXTRACT is numeric since PostgreSQL 14, several times slower.
        return func.date_part("epoch", end - start, type_=Float)
    # julianday() holds whole milliseconds, but as a day fraction in a double: the difference
    # of two is off by up to ~50 us, which put half of the durations exactly on a bound
    # above it. Rounded to the millisecond, it is exact.
    ms = func.round((func.julianday(end) - func.julianday(start)) * 86_400_000.0)
    return type_coerce(ms / 1000.0, Float)


@functools.cache
def stage_histogram_statement(dialect: str, *, stages: tuple[tuple[str, str, str], ...],
                              buckets_s: tuple[int, ...]) -> Select[Any]:
    """One row per priority of the studies created since the ``since`` parameter: for each
    stage, the count at or under each bound, the count and the sum of its durations (NULL
    ones, a milestone not reached, excluded).

    The subquery reads each study of the window once (the index on created_at) and computes
    each duration once; its OFFSET 0 keeps the planners from inlining the duration into
    every aggregate that reads it (PostgreSQL and SQLite do not flatten a subquery with an
    OFFSET), which computed it twelve times per stage. Built once per process: constructing
    its hundred columns took longer than running it."""
    since = bindparam("since", type_=Study.created_at.type)
    durations = (select(Study.priority, *(_duration_s(dialect, MILESTONES[a], MILESTONES[b]).label(f"d{i}")
                                          for i, (_n, a, b) in enumerate(stages)))
                 .where(Study.created_at >= since).offset(0).subquery())
    columns: list[Any] = []
    for i in range(len(stages)):
        d = durations.c[f"d{i}"]
        columns += [*(func.count().filter(d <= literal_column(str(int(le)))) for le in buckets_s),
                    func.count(d), func.sum(d)]
    return select(durations.c.priority, *columns).group_by(durations.c.priority)


def stage_histograms(session: Session, *, since: datetime, stages: tuple[tuple[str, str, str], ...],
                     buckets_s: tuple[int, ...]) -> dict[str, list[Histogram]]:
    """priority -> one histogram per stage (in the order of ``stages``) of the studies
    created since ``since``; a priority with no study in the window is absent."""
    stmt = stage_histogram_statement(session.get_bind().dialect.name, stages=stages, buckets_s=buckets_s)
    width = len(buckets_s) + 2
    out: dict[str, list[Histogram]] = {}
    for row in session.execute(stmt, {"since": since}):
        parts = [row[1 + i * width: 1 + (i + 1) * width] for i in range(len(stages))]
        out[row[0]] = [Histogram([int(n) for n in p[:-2]], int(p[-2]), float(p[-1] or 0.0)) for p in parts]
    return out

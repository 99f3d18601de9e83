"""Queries of the metrics domain: the counters the database keeps for /metrics.

Triggers (migration 0022) append a row to ``metric_deltas`` in the transaction of every
change a figure depends on; writers never update a shared row, so concurrent ingests do
not wait on each other. A scrape folds the pending deltas into ``metric_counters`` and
reads those: its cost follows the changes since the last scrape, not the history.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from relay.county.db.models import MetricCounter, MetricDelta

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


def fold_and_read(session: Session) -> Counters:
    """Fold the pending deltas into the counters and return every counter; the caller commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_FOLD)
    else:
        _fold_sqlite(session)
    out: Counters = defaultdict(dict)
    for row in session.execute(select(MetricCounter.name, MetricCounter.labels, MetricCounter.value)):
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
    if dialect == "postgresql":
        return f"date_part('epoch', {end} - {start})"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


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

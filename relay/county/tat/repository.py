"""Queries of the turnaround domain, over the per-study milestone columns of ``studies``.

The columns (``tat_*``, migration 0018) hold the first transition into each state and
are kept by database triggers, so a dashboard reads one row per study in the window
(an index range on ``created_at``) instead of every transition. On PostgreSQL the
percentiles are computed by ``percentile_cont``, which interpolates linearly between
order statistics exactly as numpy's default does; other databases (SQLite, embedded)
get the rows and the service computes the same figures in Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, String, and_, case, cast, func, literal, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.orm import InstrumentedAttribute, Session

from relay.county.db.models import ReadingItem, Site, Study, User

DASHBOARD_WORK_MEM = "64MB"
"""PostgreSQL work_mem for the percentile sorts of one dashboard query."""

MILESTONES: dict[str, InstrumentedAttribute[datetime | None]] = {
    "received_at_edge": Study.tat_edge_at,
    "arrived": Study.tat_arrived_at,
    "assigned": Study.tat_assigned_at,
    "reading": Study.tat_reading_at,
    "signed": Study.tat_signed_at,
    "delivered": Study.tat_delivered_at,
    "acknowledged": Study.tat_acknowledged_at,
}
"""Milestone name -> the column holding it."""

OPEN_STATES = ("queued", "assigned", "reading")


def _window(since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(Study.created_at >= since, Study.created_at < until)


def study_rows(session: Session, *, since: datetime, until: datetime) -> Iterator[Any]:
    """(uid, site, modality, priority, reader, *milestones) of the studies that arrived in the
    window, streamed in arrival order."""
    stmt = (select(Study.study_uid, Site.name, Study.modalities, Study.priority,
                   func.coalesce(Study.tat_reader, ""), *MILESTONES.values())
            .join(Site, Site.id == Study.site_id).where(_window(since, until)).order_by(Study.created_at, Study.id))
    yield from session.execute(stmt.execution_options(yield_per=5000))


def _seconds(start: str, end: str) -> ColumnElement[float]:
    # date_part returns float8 directly; EXTRACT returns numeric since PostgreSQL 14, and
    # numeric arithmetic on every row of a month was half of the query's time.
    return func.date_part("epoch", MILESTONES[end] - MILESTONES[start], type_=Float)


def group_key(group_by: str, zone: str) -> ColumnElement[Any]:
    """The SQL expression of a group's key, as the Python path names it."""
    local = func.timezone(zone, Study.tat_arrived_at)
    keys: dict[str, Any] = {
        "site": Site.name,
        "modality": Study.modalities,
        "priority": Study.priority,
        "reader": func.coalesce(Study.tat_reader, ""),
        "day": func.coalesce(func.to_char(local, "YYYY-MM-DD"), ""),
        "week": func.coalesce(func.to_char(func.date_trunc("week", local), "YYYY-MM-DD"), ""),
        "all": cast(literal("all"), String),
    }
    key: ColumnElement[Any] = keys[group_by]
    return key


def stage_percentiles_statement(*, since: datetime, until: datetime, group_by: str, zone: str,
                                stages: tuple[tuple[str, str, str], ...]) -> Select[Any]:
    """One row per group: the key, then (n, p50, p90, max) seconds of each stage.

    The durations are computed once per study in a subquery; each stage is then one sort
    (percentile_cont over an array of fractions) per group."""
    inner = (select(group_key(group_by, zone).label("k"),
                   *(_seconds(start, end).label(f"d{i}") for i, (_n, start, end) in enumerate(stages)))
            .where(_window(since, until)))
    if group_by == "site":
        inner = inner.join(Site, Site.id == Study.site_id)
    rows = inner.subquery()
    columns: list[Any] = [rows.c.k]
    for i in range(len(stages)):
        d = rows.c[f"d{i}"]
        columns += [func.count(d), func.percentile_cont(cast(array([0.5, 0.9]), ARRAY(Float))).within_group(d), func.max(d)]
    return select(*columns).group_by(rows.c.k)


def stage_percentiles_pg(session: Session, *, since: datetime, until: datetime, group_by: str, zone: str,
                         stages: tuple[tuple[str, str, str], ...]) -> list[tuple[str, str, int, float, float, float]]:
    """(group, stage, n, p50, p90, max) seconds, computed in PostgreSQL; stages with no study omitted."""
    stmt = stage_percentiles_statement(since=since, until=until, group_by=group_by, zone=zone, stages=stages)
    # Each stage is a sort of every study in the window: ~6.5 MB at 80k studies (30 days
    # at 1M a year), over PostgreSQL's default 4 MB, which sent it to disk (EXPLAIN:
    # "external merge"). For this transaction only.
    session.execute(text(f"SET LOCAL work_mem = '{DASHBOARD_WORK_MEM}'"))
    out: list[tuple[str, str, int, float, float, float]] = []
    for row in session.execute(stmt):
        for i, (name, _s, _e) in enumerate(stages):
            n, fractions, top = row[1 + 3 * i: 4 + 3 * i]
            if n:
                p50, p90 = fractions
                out.append((str(row[0]), name, int(n), float(p50), float(p90), float(top)))
    return out


def breaches(session: Session, *, cutoffs: dict[str, datetime], default_cutoff: datetime) -> list[Any]:
    """Open studies that arrived before their priority's cutoff (the caller's bound: now
    minus the shortest SLA the priority can have): (uid, site, priority, state, holder,
    created_at, modalities)."""
    late = or_(*(and_(Study.priority == p, Study.created_at < c) for p, c in cutoffs.items()),
               and_(Study.priority.not_in(list(cutoffs)), Study.created_at < default_cutoff))
    stmt = (select(Study.study_uid, Site.name, Study.priority, Study.state, User.username, Study.created_at,
                   Study.modalities)
            .join(Site, Site.id == Study.site_id)
            .outerjoin(ReadingItem, ReadingItem.study_pk == Study.id)
            .outerjoin(User, User.id == ReadingItem.assigned_user_id)
            .where(Study.state.in_(OPEN_STATES), late))
    return list(session.execute(stmt).all())


def held_per_reader(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(User.username, func.count()).join(ReadingItem, ReadingItem.assigned_user_id == User.id)
        .join(Study, Study.id == ReadingItem.study_pk).where(Study.state.in_(("assigned", "reading")))
        .group_by(User.username)).all()
    return {str(name): int(n) for name, n in rows}


def _signed_recently(since: datetime, until: datetime, signed_after: datetime) -> ColumnElement[bool]:
    return and_(_window(since, until), Study.tat_reader.is_not(None), Study.tat_reader != "",
                Study.tat_signed_at >= signed_after)


def signatures_pg(session: Session, *, since: datetime, until: datetime, signed_after: datetime,
                  midnight: datetime) -> list[tuple[str, int, int, float | None]]:
    """(reader, signed, signed since midnight, median read seconds), in PostgreSQL."""
    read = _seconds("reading", "signed")
    stmt = (select(Study.tat_reader, func.count(), func.count(case((Study.tat_signed_at >= midnight, 1))),
                   func.percentile_cont(0.5).within_group(read))
            .where(_signed_recently(since, until, signed_after)).group_by(Study.tat_reader))
    return [(str(r), int(n), int(today), None if med is None else float(med))
            for r, n, today, med in session.execute(stmt)]


def signature_rows(session: Session, *, since: datetime, until: datetime,
                   signed_after: datetime) -> list[tuple[str, datetime, datetime | None]]:
    """(reader, signed at, opened at) of recent signatures, for the Python path."""
    stmt = (select(Study.tat_reader, Study.tat_signed_at, Study.tat_reading_at)
            .where(_signed_recently(since, until, signed_after)))
    return [(str(r), s, o) for r, s, o in session.execute(stmt) if s is not None]


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"

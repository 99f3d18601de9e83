"""Queries of the reading queue. Row locks decide who gets a study, not the application."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from relay.county.db.models import ReadingItem, Study


def _lockable(session: Session, stmt: Select[Any], *, skip_locked: bool) -> Select[Any]:
    if session.get_bind().dialect.name != "postgresql":
        return stmt  # SQLite serialises writers on its own (one machine, embedded default)
    return stmt.with_for_update(of=ReadingItem, skip_locked=skip_locked)


def next_unassigned(session: Session) -> tuple[ReadingItem, Study] | None:
    """The most urgent, oldest unassigned item, locked; items locked by others are skipped."""
    stmt: Any = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(ReadingItem.assigned_user_id.is_(None), Study.state == "queued")
            .order_by(ReadingItem.priority_rank, ReadingItem.queued_at, ReadingItem.id).limit(1))
    row: Any = session.execute(_lockable(session, stmt, skip_locked=True)).first()
    return None if row is None else (row[0], row[1])


def item_for_update(session: Session, study_uid: str) -> tuple[ReadingItem, Study] | None:
    """The item of one study, locked (waiting for another claim on it to finish)."""
    stmt: Any = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(Study.study_uid == study_uid))
    row: Any = session.execute(_lockable(session, stmt, skip_locked=False)).first()
    return None if row is None else (row[0], row[1])

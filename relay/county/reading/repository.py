"""Queries of the reading queue. Row locks decide who gets a study, not the application."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from relay.county.db.models import ReadingItem, Series, Study
from relay.county.reading.competence import Competence
from relay.county.studies.repository import has_modality
from relay.dicom import body_parts
from relay.dicom.vocab import StudyState


def _lockable(session: Session, stmt: Select[Any], *, skip_locked: bool) -> Select[Any]:
    if session.get_bind().dialect.name != "postgresql":
        return stmt  # SQLite serialises writers on its own (one machine, embedded default)
    return stmt.with_for_update(of=ReadingItem, skip_locked=skip_locked)


def _fits(competence: Competence) -> ColumnElement[bool]:
    """SQL for :meth:`Competence.reads` on a queued study: the same rule, in the query, so that
    claim-next locks only the one item it takes."""
    rules: list[ColumnElement[bool]] = []
    if competence.modalities:
        rules.append(or_(Study.modalities == "", *(has_modality(m) for m in sorted(competence.modalities))))
    if competence.regions:
        named = select(Series.id).where(Series.study_pk == Study.id, func.trim(Series.body_part) != "")
        ours = select(Series.id).where(Series.study_pk == Study.id, func.upper(func.trim(Series.body_part))
                                       .in_(sorted(body_parts.spellings(competence.regions))))
        rules.append(or_(~named.exists(), ours.exists()))
    return and_(true(), *rules)


def next_unassigned(session: Session, competence: Competence = Competence()) -> tuple[ReadingItem, Study] | None:
    """The most urgent, oldest unassigned item that fits ``competence``, locked; items locked by
    others are skipped."""
    stmt: Any = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(ReadingItem.assigned_user_id.is_(None), Study.state == StudyState.QUEUED.value, _fits(competence))
            .order_by(ReadingItem.priority_rank, ReadingItem.queued_at, ReadingItem.id).limit(1))
    row: Any = session.execute(_lockable(session, stmt, skip_locked=True)).first()
    return None if row is None else (row[0], row[1])


def item_for_update(session: Session, study_uid: str) -> tuple[ReadingItem, Study] | None:
    """The item of one study, locked (waiting for another claim on it to finish)."""
    stmt: Any = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(Study.study_uid == study_uid))
    row: Any = session.execute(_lockable(session, stmt, skip_locked=False)).first()
    return None if row is None else (row[0], row[1])


def start_reading(session: Session, *, study_pk: int, at: datetime) -> bool:
    """Move an assigned study to ``reading``; False if it is no longer ``assigned`` (decided on
    the row's latest version, not on what an earlier statement read)."""
    done = session.execute(update(Study).where(Study.id == study_pk, Study.state == StudyState.ASSIGNED.value)
                           .values(state=StudyState.READING.value, updated_at=at).execution_options(synchronize_session=False))
    return bool(done.rowcount)  # type: ignore[attr-defined]

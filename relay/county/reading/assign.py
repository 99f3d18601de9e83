"""Automatic assignment: on-duty readers with the right competence (modality and body
region: see :mod:`relay.county.reading.competence`), least loaded, STAT first.

On duty means the duty roster covers the round's "now" (or the reader's manual switch is
on): see :mod:`relay.county.reading.roster`.

Run in rounds by a thread of the worker process (any number of workers: the items are
taken under ``FOR UPDATE SKIP LOCKED``). A round first moves studies that were
assigned but not opened in time to another on-duty reader, then assigns unassigned
studies, most urgent and oldest first, each to the competent reader holding the
fewest. Every hand-over is a study transition with actor ``auto`` and a
``study.assigned`` event. Readers may still claim by hand.

A study that goes onto the queue is also assigned at once by a task on the ``assign``
queue (:func:`assign_study`, enqueued after that commit); the rounds remain for
reassignment and as the safety net for a lost or refused message.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from relay.config import CountySettings
from relay.county.clock import now_utc
from relay.county.db.models import ReadingItem, Study
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.reading import roster
from relay.county.reading.competence import Competence
from relay.county.studies.repository import add_transition, study_regions
from relay.dicom.vocab import StudyState

log = logging.getLogger(__name__)

ROUND_S = 15.0
"""Seconds between assignment rounds."""
BATCH = 200
"""Unassigned studies considered per round."""


@dataclass
class Reader:
    user_id: int
    username: str
    competence: Competence
    load: int


def on_duty_readers(session: Session, *, at: datetime, zone: ZoneInfo) -> list[Reader]:
    """Readers on duty at ``at`` (the manual switch, or the roster: see reading.roster), with
    how many studies each holds now."""
    held = dict(session.execute(
        select(ReadingItem.assigned_user_id, func.count()).join(Study, Study.id == ReadingItem.study_pk)
        .where(Study.state.in_((StudyState.ASSIGNED.value, StudyState.READING.value)))
        .group_by(ReadingItem.assigned_user_id)).all())
    users = [d.user for d in roster.on_duty(session=session, at=at, zone=zone)]
    return [Reader(u.id, u.username, Competence.of(u), int(held.get(u.id, 0))) for u in users]


def _pick(readers: list[Reader], study: Study, regions: dict[int, frozenset[str]],
          exclude: int | None = None) -> Reader | None:
    """The least loaded reader competent for the study's modalities and body regions."""
    wanted = regions.get(study.id, frozenset())
    fits = [r for r in readers if r.user_id != exclude
            and r.competence.reads(modalities=study.modalities, regions=wanted)]
    return min(fits, key=lambda r: (r.load, r.username)) if fits else None


def _locked(session: Session, stmt: Any, *, with_study: bool = False) -> Any:
    """``stmt`` with its reading items locked, skipping those another transaction holds.

    ``with_study`` locks the study rows too (``FOR NO KEY UPDATE``). A row lock re-checks the
    WHERE clause only against newer versions of the rows it locks: a scan that filters on the
    study's state must lock the study, or an open that commits during the scan (it changes the
    study, not the item) goes unseen and the round takes back a study already being read."""
    if session.get_bind().dialect.name != "postgresql":
        return stmt
    if with_study:
        return stmt.with_for_update(of=(ReadingItem, Study), skip_locked=True, key_share=True)
    return stmt.with_for_update(of=ReadingItem, skip_locked=True)


def _give(session: Session, item: ReadingItem, study: Study, reader: Reader, now: datetime, detail: str) -> None:
    item.assigned_user_id, item.assigned_at = reader.user_id, now
    study.state, study.updated_at = StudyState.ASSIGNED.value, now
    add_transition(session, study_pk=study.id, state=StudyState.ASSIGNED, at=now, actor="auto", detail=detail)
    outbox.emit(session, Topic.STUDY_ASSIGNED, assigned_event(study.study_uid, reader.username, actor="auto"))
    reader.load += 1


def _limit(settings: CountySettings, study: Study) -> float:
    """Minutes an assigned study may stay unopened before it goes to another reader."""
    return settings.reassign_stat_minutes if study.priority == "stat" else settings.reassign_minutes


def assigned_event(study_uid: str, reader: str, *, actor: str) -> dict[str, str]:
    """The ``study.assigned`` payload: identifiers only (no patient data)."""
    return {"study_instance_uid": study_uid, "reader": reader, "actor": actor}


def _reassign_stale(session: Session, readers: list[Reader], settings: CountySettings, now: datetime) -> int:
    moved = 0
    stmt = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(Study.state == StudyState.ASSIGNED.value, ReadingItem.assigned_at.is_not(None)))
    stale = [(item, study) for item, study in session.execute(_locked(session, stmt, with_study=True)).all()
             if item.assigned_at <= now - timedelta(minutes=_limit(settings, study))]
    regions = study_regions(session, [study.id for _, study in stale])
    for item, study in stale:
        other = _pick(readers, study, regions, exclude=item.assigned_user_id)
        if other is None:
            continue  # nobody else on duty can read it: it stays where it is
        previous = next((r for r in readers if r.user_id == item.assigned_user_id), None)
        if previous is not None:
            previous.load -= 1
        _give(session, item, study, other, now, f"reassigned: not opened within {_limit(settings, study):g} min")
        moved += 1
    return moved


def assign_round(*, session: Session, settings: CountySettings, now: datetime | None = None) -> tuple[int, int]:
    """One round; returns (assigned, reassigned)."""
    now = now or now_utc()
    readers = on_duty_readers(session, at=now, zone=ZoneInfo(settings.timezone))
    if not readers:
        session.rollback()
        return 0, 0
    reassigned = _reassign_stale(session, readers, settings, now)
    stmt = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(ReadingItem.assigned_user_id.is_(None), Study.state == StudyState.QUEUED.value)
            .order_by(ReadingItem.priority_rank, ReadingItem.queued_at, ReadingItem.id).limit(BATCH))
    assigned = 0
    rows = session.execute(_locked(session, stmt)).all()
    regions = study_regions(session, [study.id for _, study in rows])
    for item, study in rows:
        reader = _pick(readers, study, regions)
        if reader is not None:
            _give(session, item, study, reader, now, f"to {reader.username}")
            assigned += 1
    session.commit()
    if assigned or reassigned:
        log.info("assignment round: assigned=%d reassigned=%d", assigned, reassigned)
    return assigned, reassigned


def assign_study(*, session: Session, settings: CountySettings, study_id: int,
                 now: datetime | None = None) -> str | None:
    """Give one queued, unassigned study to a reader by the round's rules; return the
    reader's username, or None (already assigned, not queued, locked by a round, or
    nobody on duty reads it: the rounds try again)."""
    now = now or now_utc()
    stmt = (select(ReadingItem, Study).join(Study, Study.id == ReadingItem.study_pk)
            .where(Study.id == study_id, ReadingItem.assigned_user_id.is_(None),
                   Study.state == StudyState.QUEUED.value))
    found = session.execute(_locked(session, stmt)).one_or_none()
    item, study = found if found is not None else (None, None)
    readers = on_duty_readers(session, at=now, zone=ZoneInfo(settings.timezone)) if study else []
    reader = _pick(readers, study, study_regions(session, [study.id])) if study else None
    if item is None or study is None or reader is None:
        session.rollback()
        return None
    _give(session, item, study, reader, now, f"to {reader.username}")
    session.commit()
    return reader.username


def run_assignment(settings: CountySettings, sessions: sessionmaker[Session], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with sessions() as session:
                assign_round(session=session, settings=settings)
        except Exception:
            log.exception("assignment round failed")
        stop.wait(ROUND_S)

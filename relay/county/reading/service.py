"""Rules of the reading queue.

Claims are decided by row locks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any
number of API replicas and readers can claim at once and no study goes to two
readers. Every change of hands is a study transition with its actor: turnaround
times and the audit of who held what come from those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from relay.county.auth.service import Principal

from relay.county.clock import now_utc
from relay.county.db.models import ReadingItem, Study, User
from relay.county.errors import Conflict, Forbidden, NotFound
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.reading import repository
from relay.county.reading.assign import assigned_event
from relay.county.reading.competence import Competence
from relay.county.studies.repository import add_transition
from relay.dicom.vocab import Role, StudyState

READER_ROLES = (Role.RADIOLOGIST, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Claimed:
    study_uid: str
    state: str
    priority: str


def _require_reader(principal: Principal) -> None:
    if principal.role not in READER_ROLES:
        raise Forbidden("only readers take studies from the reading queue")


def _assign(session: Session, item: ReadingItem, study: Study, principal: Principal, how: str) -> Claimed:
    now = now_utc()
    item.assigned_user_id, item.assigned_at = principal.user_id, now
    study.state, study.updated_at = StudyState.ASSIGNED.value, now
    add_transition(session, study_pk=study.id, state=StudyState.ASSIGNED, at=now,
                   actor=principal.username, detail=how)
    outbox.emit(session, Topic.STUDY_ASSIGNED,
                assigned_event(study.study_uid, principal.username, actor=principal.username))
    session.commit()
    return Claimed(study.study_uid, study.state, study.priority)


def claim_next(*, session: Session, principal: Principal) -> Claimed | None:
    """Give the reader the most urgent unassigned study they are competent for (modality and
    body region, as automatic assignment), or None if none is waiting."""
    _require_reader(principal)
    user = session.get(User, principal.user_id)
    found = repository.next_unassigned(session, Competence.of(user) if user else Competence())
    if found is None:
        session.rollback()
        return None
    return _assign(session, *found, principal, "claim-next")


def claim(*, session: Session, principal: Principal, study_uid: str) -> Claimed:
    """Take one chosen study; 409 if another reader holds it."""
    _require_reader(principal)
    item, study = _locked(session, study_uid)
    if item.assigned_user_id == principal.user_id:
        session.rollback()
        return Claimed(study.study_uid, study.state, study.priority)
    if item.assigned_user_id is not None or study.state != StudyState.QUEUED.value:
        session.rollback()
        raise Conflict("another reader holds this study")
    return _assign(session, item, study, principal, "claim")


def release(*, session: Session, principal: Principal, study_uid: str) -> Claimed:
    """Put a held study back on the queue (its holder, or an administrator)."""
    item, study = _locked(session, study_uid)
    if item.assigned_user_id is None:
        session.rollback()
        raise Conflict("the study is not held by anyone")
    if item.assigned_user_id != principal.user_id and principal.role is not Role.ADMIN:
        session.rollback()
        raise Forbidden("only the holder or an administrator can release a study")
    now = now_utc()
    item.assigned_user_id, item.assigned_at = None, None
    study.state, study.updated_at = StudyState.QUEUED.value, now
    add_transition(session, study_pk=study.id, state=StudyState.QUEUED, at=now,
                   actor=principal.username, detail="released")
    session.commit()
    return Claimed(study.study_uid, study.state, study.priority)


def open_study(*, session: Session, principal: Principal, study_uid: str) -> Claimed:
    """The holder opens the study: ``reading`` starts (recorded once)."""
    item, study = _locked(session, study_uid)
    if item.assigned_user_id != principal.user_id:
        session.rollback()
        raise Conflict("claim the study before opening it")
    now = now_utc()
    # The item lock may have been waited for behind another open of this study: the study row
    # read with it is then stale, so the change is decided by the conditional update itself.
    if study.state == StudyState.ASSIGNED.value and repository.start_reading(session, study_pk=study.id, at=now):
        add_transition(session, study_pk=study.id, state=StudyState.READING, at=now,
                       actor=principal.username)
    session.refresh(study)
    session.commit()
    return Claimed(study.study_uid, study.state, study.priority)


def _locked(session: Session, study_uid: str) -> tuple[ReadingItem, Study]:
    found = repository.item_for_update(session, study_uid)
    if found is None:
        raise NotFound(f"no study {study_uid} on the reading queue")
    return found

"""Queries of the studies domain."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.county.db.models import Instance, InstanceHeader, Patient, ReadingItem, Series, Study, StudyTransition
from relay.county.db.upsert import insert_ignore
from relay.dicom import body_parts
from relay.dicom.vocab import StudyState


def instance_for_update(session: Session, instance_id: int) -> Instance | None:
    return session.get(Instance, instance_id, with_for_update=True)


def upsert_patient(session: Session, values: dict[str, object]) -> int:
    pk, _ = insert_ignore(session, Patient, values, keys=["patient_id", "issuer"])
    return pk


def patient_of_study(session: Session, study_uid: str) -> int | None:
    """The patient row an already indexed study belongs to; None for a new study."""
    return session.execute(select(Study.patient_pk).where(Study.study_uid == study_uid)).scalar_one_or_none()


def upsert_study(session: Session, values: dict[str, object]) -> tuple[int, bool]:
    return insert_ignore(session, Study, values, keys=["study_uid"])


def upsert_series(session: Session, values: dict[str, object]) -> int:
    pk, _ = insert_ignore(session, Series, values, keys=["series_uid"])
    return pk


def add_transition(session: Session, *, study_pk: int, state: str, at: datetime, detail: str = "",
                   actor: str = "") -> None:
    session.add(StudyTransition(study_pk=study_pk, state=state, at=at, detail=detail, actor=actor))


def enqueue_reading(session: Session, *, study_pk: int, priority_rank: int, at: datetime) -> bool:
    _, inserted = insert_ignore(
        session, ReadingItem,
        {"study_pk": study_pk, "priority_rank": priority_rank, "queued_at": at},
        keys=["study_pk"])
    return inserted


def escalate_priority(session: Session, *, study_pk: int, priority: str, rank: int, at: datetime) -> bool:
    """Raise a study's priority (never lower it) when a more urgent instance arrives;
    True if it changed."""
    moved = session.execute(update(ReadingItem).where(ReadingItem.study_pk == study_pk,
                                                      ReadingItem.priority_rank > rank)
                            .values(priority_rank=rank)).rowcount  # type: ignore[attr-defined]
    session.execute(update(Study).where(Study.id == study_pk, Study.priority != priority)
                    .values(priority=priority, updated_at=at))
    return bool(moved)


def study_modalities(session: Session, study_pk: int) -> list[str]:
    rows = session.execute(select(Series.modality).where(Series.study_pk == study_pk).distinct())
    return sorted(m for (m,) in rows if m)


def has_modality(code: str) -> ColumnElement[bool]:
    """SQL: the study's backslash-separated ``modalities`` holds ``code`` as a whole code
    (CT matches CT\\PT, not CTA)."""
    wrapped = literal("\\") + Study.modalities + literal("\\")
    return wrapped.contains(f"\\{code.upper()}\\", autoescape=True)


def study_regions(session: Session, study_pks: Collection[int]) -> dict[int, frozenset[str]]:
    """Per study, the normalised body regions its series name (BodyPartExamined); studies
    whose series name none are absent."""
    if not study_pks:
        return {}
    rows = session.execute(select(Series.study_pk, Series.body_part)
                           .where(Series.study_pk.in_(study_pks), Series.body_part != "").distinct())
    found: dict[int, set[str]] = {}
    for pk, part in rows:
        found.setdefault(pk, set()).add(part)
    return {pk: regions for pk, parts in found.items() if (regions := body_parts.region_set(parts))}


def touch_study(session: Session, *, study_pk: int, modalities: str, at: datetime) -> None:
    session.execute(update(Study).where(Study.id == study_pk).values(modalities=modalities, updated_at=at))




def study_state(session: Session, study_pk: int) -> str:
    return str(session.execute(select(Study.state).where(Study.id == study_pk)).scalar_one())


def reopen(session: Session, *, study_pk: int, at: datetime) -> None:
    """Put a signed study back on the reading queue, unassigned, keeping its priority."""
    session.execute(update(Study).where(Study.id == study_pk).values(state=StudyState.QUEUED.value, updated_at=at))
    session.execute(update(ReadingItem).where(ReadingItem.study_pk == study_pk)
                    .values(assigned_user_id=None, assigned_at=None, queued_at=at))


def late_counts(session: Session, study_uids: list[str]) -> dict[str, int]:
    """Per study, how many instances arrived as additions."""
    rows = session.execute(select(Instance.study_uid, func.count()).where(
        Instance.study_uid.in_(study_uids), Instance.late.is_(True)).group_by(Instance.study_uid))
    return {uid: int(n) for uid, n in rows}


def put_header(session: Session, *, instance_pk: int, header: str | None) -> None:
    """Keep the instance's header JSON in the index (once; a second indexing keeps the first)."""
    if header is None:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(InstanceHeader).values(instance_pk=instance_pk, header_json=header)
                    .on_conflict_do_nothing(index_elements=["instance_pk"]))


def header_of(session: Session, instance_pk: int) -> str | None:
    """The instance's kept header JSON, None if none was kept."""
    return session.execute(select(InstanceHeader.header_json)
                           .where(InstanceHeader.instance_pk == instance_pk)).scalar_one_or_none()

"""Queries behind QIDO-RS and WADO-RS: the index, filtered by role and site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from relay.county.db.models import Instance, Patient, Series, Study


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """QIDO-RS study-level matching keys (PS3.18 8.3.4), already parsed."""

    study_uids: list[str]
    patient_name: str | None
    patient_id: str | None
    accession_number: str | None
    study_date: tuple[str | None, str | None] | None
    modality: str | None
    site_id: int | None
    limit: int
    offset: int


def _like(value: str) -> str:
    """DICOM wildcards (* and ?) as a SQL LIKE pattern, LIKE's own metacharacters escaped."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match(column: Any, value: str) -> Any:
    """``column = value`` when there is no wildcard, else LIKE. Equality is found in the
    index in a generic plan too (psycopg prepares a statement run 5 times, PostgreSQL may
    then plan ``LIKE $1`` without the value: a full scan); LIKE without wildcards is the
    same match."""
    if "*" in value or "?" in value:
        return column.like(_like(value), escape="\\")
    return column == value


def _filter(stmt: Select[Any], q: StudyQuery) -> Select[Any]:
    if q.study_uids:
        stmt = stmt.where(Study.study_uid.in_(q.study_uids))
    if q.patient_name:
        pattern = _like(q.patient_name)
        # match any component group: "李*" finds "Li^Na=李^娜"
        stmt = stmt.where(or_(Patient.name.like(pattern, escape="\\"),
                              Patient.name.like("%=" + pattern, escape="\\")))
    if q.patient_id:
        stmt = stmt.where(_match(Patient.patient_id, q.patient_id))
    if q.accession_number:
        stmt = stmt.where(Study.accession_number == q.accession_number)
    if q.study_date:
        lo, hi = q.study_date
        stmt = stmt.where(Study.study_date >= lo) if lo else stmt
        stmt = stmt.where(Study.study_date <= hi) if hi else stmt
    if q.modality:
        stmt = stmt.where(Study.modalities.like(f"%{_like(q.modality)}%", escape="\\"))
    if q.site_id is not None:
        stmt = stmt.where(Study.site_id == q.site_id)
    return stmt


def search_statement(q: StudyQuery) -> Select[Any]:
    """The SELECT behind :func:`search_studies` (bench/county.py runs it bare, as the floor)."""
    n_series = (select(func.count(Series.id)).where(Series.study_pk == Study.id)
                .correlate(Study).scalar_subquery())
    n_instances = (select(func.count(Instance.id)).where(Instance.study_uid == Study.study_uid,
                                                          Instance.series_pk.is_not(None))
                   .correlate(Study).scalar_subquery())
    stmt = select(Study, Patient, n_series, n_instances).join(Patient, Patient.id == Study.patient_pk)
    return _filter(stmt, q).order_by(Study.study_date.desc(), Study.id.desc()).limit(q.limit).offset(q.offset)


def search_studies(session: Session, q: StudyQuery) -> list[tuple[Study, Patient, int, int]]:
    """Matching studies with their series and instance counts, newest first."""
    return [(s, p, int(a), int(b)) for s, p, a, b in session.execute(search_statement(q)).all()]


def study(session: Session, study_uid: str, site_id: int | None) -> Study | None:
    stmt = select(Study).where(Study.study_uid == study_uid)
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return session.execute(stmt).scalar_one_or_none()


def series_of(session: Session, study_pk: int, series_uid: str | None = None) -> list[tuple[Series, int]]:
    count = (select(func.count(Instance.id)).where(Instance.series_pk == Series.id)
             .correlate(Series).scalar_subquery())
    stmt = select(Series, count).where(Series.study_pk == study_pk).order_by(Series.series_number, Series.id)
    if series_uid:
        stmt = stmt.where(Series.series_uid == series_uid)
    return [(s, int(n)) for s, n in session.execute(stmt).all()]


def instances_of(session: Session, *, study_uid: str, series_uid: str | None = None,
                 sop_uid: str | None = None) -> list[Instance]:
    """Indexed instances of a study (optionally one series or one instance), in order."""
    stmt = select(Instance).where(Instance.study_uid == study_uid, Instance.series_pk.is_not(None))
    if series_uid:
        stmt = stmt.where(Instance.series_uid == series_uid)
    if sop_uid:
        stmt = stmt.where(Instance.sop_uid == sop_uid)
    return list(session.execute(stmt.order_by(Instance.series_uid, Instance.instance_number,
                                              Instance.id)).scalars())

"""Queries behind QIDO-RS and WADO-RS: the index, filtered by role and site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Unpack

from sqlalchemy import Row, Select, func, or_, select, text
from sqlalchemy.orm import Session

from relay.county.db.models import AuditEvent, Instance, InstanceHeader, Patient, Series, Study
from relay.county.studies.repository import has_modality

_Select = TypeVar("_Select", bound=Select[Unpack[tuple[Any, ...]]])


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
    study_time: tuple[str | None, str | None] | None = None
    """Inclusive bounds compared as strings (see ``qido.time_range``)."""


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


NAME_FANOUT = 1500
"""Most patients a PatientName search gathers the studies of before ordering them.

Up to this many matching patients, gathering their studies and ordering those is
quicker; beyond it, walking the studies newest first fills the page sooner. The
repository counts the matches and decides, rather than PostgreSQL's planner, whose
estimate varies with each ANALYZE (measurements: docs/design/qido-name-search.md)."""


def _name_match(value: str) -> Any:
    """PatientName with DICOM wildcards, matched in any component group."""
    pattern = _like(value)
    if value.startswith("*"):  # already matches inside any component group
        return Patient.name.like(pattern, escape="\\")
    # match any component group: "李*" finds "Li^Na=李^娜"
    return or_(Patient.name.like(pattern, escape="\\"), Patient.name.like("%=" + pattern, escape="\\"))


def _modality_match(value: str) -> Any:
    """ModalitiesInStudy: any of its codes (``CT,MR``), each a whole code of the study's
    (CT is not OCT); a code with a DICOM wildcard matches as a pattern."""
    codes = [c.strip() for c in value.replace("\\", ",").split(",") if c.strip()]
    return or_(*(Study.modalities.like(f"%{_like(c)}%", escape="\\") if "*" in c or "?" in c
                 else has_modality(c) for c in codes))


def _filter(stmt: _Select, q: StudyQuery) -> _Select:
    """``stmt`` (which joins Patient) narrowed by the query's matching keys."""
    if q.study_uids:
        stmt = stmt.where(Study.study_uid.in_(q.study_uids))
    if q.patient_name:
        stmt = stmt.where(_name_match(q.patient_name))
    if q.patient_id:
        stmt = stmt.where(_match(Patient.patient_id, q.patient_id))
    if q.accession_number:
        stmt = stmt.where(Study.accession_number == q.accession_number)
    if q.study_date:
        lo, hi = q.study_date
        stmt = stmt.where(Study.study_date >= lo) if lo else stmt
        stmt = stmt.where(Study.study_date <= hi) if hi else stmt
    if q.study_time:
        lo, hi = q.study_time
        stmt = stmt.where(Study.study_time != "")
        stmt = stmt.where(Study.study_time >= lo) if lo else stmt
        stmt = stmt.where(Study.study_time <= hi) if hi else stmt
    if q.modality:
        stmt = stmt.where(_modality_match(q.modality))
    if q.site_id is not None:
        stmt = stmt.where(Study.site_id == q.site_id)
    return stmt


def _result_columns() -> tuple[Any, ...]:
    """What a study search returns: the study's and patient's attributes, two counts. The
    name is the study's own (a later study under the same ID + issuer may carry another)."""
    n_series = (select(func.count(Series.id)).where(Series.study_pk == Study.id)
                .correlate(Study).scalar_subquery())
    n_instances = (select(func.count(Instance.id)).where(Instance.study_uid == Study.study_uid,
                                                          Instance.series_pk.is_not(None))
                   .correlate(Study).scalar_subquery())
    return (Study.study_uid, Study.study_date, Study.study_time, Study.accession_number,
            Study.modalities, Study.description, Study.patient_name,
            Patient.patient_id, Patient.issuer, Patient.birth_date, Patient.sex,
            n_series.label("n_series"), n_instances.label("n_instances"))


_NEWEST_FIRST = (Study.study_date.desc(), Study.id.desc())


def search_statement(q: StudyQuery) -> Select[Any]:
    """One page of matching studies, newest first, walking the studies (see NAME_FANOUT)."""
    rows = select(*_result_columns()).join(Patient, Patient.id == Study.patient_pk)
    if not q.offset and not q.patient_name:
        return _filter(rows, q).order_by(*_NEWEST_FIRST).limit(q.limit)
    # Find the page's ids first: for a later page, else the counts are computed for every
    # skipped row too; for a name, so that the walk reads indexes only (migration 0017).
    keys = select(Study.id)
    if q.patient_name or q.patient_id:
        keys = keys.join(Patient, Patient.id == Study.patient_pk)
    page = _filter(keys, q).order_by(*_NEWEST_FIRST).limit(q.limit).offset(q.offset).subquery()
    return rows.join(page, page.c.id == Study.id).order_by(*_NEWEST_FIRST)


def _few_patients_named(session: Session, value: str, fanout: int) -> bool:
    """Whether at most ``fanout`` patients have a matching name (counted no further)."""
    named = select(Patient.id).where(_name_match(value)).limit(fanout + 1).subquery()
    return int(session.execute(select(func.count()).select_from(named)).scalar_one()) <= fanout


def _gathered_statement(q: StudyQuery) -> Select[Any]:
    """One page of matching studies, newest first, ordered from all the matching studies'
    keys (a few thousand at most when few patients match). MATERIALIZED keeps the
    planner from turning this back into a walk of the studies by date."""
    found = (_filter(select(Study.id, Study.study_date).join(Patient, Patient.id == Study.patient_pk), q)
             .cte("found").prefix_with("MATERIALIZED"))
    page = (select(found.c.id).order_by(found.c.study_date.desc(), found.c.id.desc())
            .limit(q.limit).offset(q.offset))
    return (select(*_result_columns()).join(Patient, Patient.id == Study.patient_pk)
            .where(Study.id.in_(page)).order_by(*_NEWEST_FIRST))


def search_studies(session: Session, q: StudyQuery, *, name_fanout: int = NAME_FANOUT) -> Sequence[Row[Any]]:
    """Matching studies, newest first, as rows named like :func:`_result_columns`.
    ``name_fanout``: see NAME_FANOUT (0 always walks)."""
    if q.patient_name and session.get_bind().dialect.name == "postgresql":
        # psycopg prepares a statement run 5 times; PostgreSQL may then reuse a plan made
        # without the pattern, and '%伟' or '丁%' need opposite plans (measured: a 3 ms seq
        # scan became a 10 ms scan of the whole trigram index). Plan with the values until
        # this transaction ends.
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    if q.patient_name and name_fanout > 0 and _few_patients_named(session, q.patient_name, name_fanout):
        return session.execute(_gathered_statement(q)).all()
    return session.execute(search_statement(q)).all()


def study(session: Session, study_uid: str, site_id: int | None) -> Study | None:
    stmt = select(Study).where(Study.study_uid == study_uid)
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return session.execute(stmt).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class SeriesKeys:
    """QIDO-RS series-level matching keys (also matched by an instance search of a study)."""

    series_uids: list[str]
    modality: str | None
    series_number: int | None


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """A series search within one study; ``limit`` None: every match."""

    study_pk: int
    study_uid: str
    keys: SeriesKeys
    limit: int | None
    offset: int


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """An instance search within one study (optionally one series); ``limit`` None: every match."""

    study_uid: str
    series_uid: str | None
    """The series the path names (the keys in ``series`` can only narrow it)."""
    series: SeriesKeys
    sop_class_uids: list[str]
    sop_uids: list[str]
    instance_number: int | None
    limit: int | None
    offset: int


def _series_filter(stmt: _Select, keys: SeriesKeys) -> _Select:
    if keys.series_uids:
        stmt = stmt.where(Series.series_uid.in_(keys.series_uids))
    if keys.modality:
        stmt = stmt.where(_match(Series.modality, keys.modality))
    if keys.series_number is not None:
        stmt = stmt.where(Series.series_number == keys.series_number)
    return stmt


def search_series(session: Session, q: SeriesQuery) -> list[tuple[Series, int]]:
    """Matching series of one study with their instance counts, by SeriesNumber. The count
    names the study too: instances are indexed by study_uid, not by series_pk."""
    count = (select(func.count(Instance.id)).where(Instance.study_uid == q.study_uid,
                                                    Instance.series_pk == Series.id)
             .correlate(Series).scalar_subquery())
    stmt = _series_filter(select(Series, count).where(Series.study_pk == q.study_pk), q.keys)
    stmt = stmt.order_by(Series.series_number, Series.id).offset(q.offset).limit(q.limit)
    return [(s, int(n)) for s, n in session.execute(stmt).all()]


def search_instances(session: Session, q: InstanceQuery) -> list[tuple[Instance, Series]]:
    """Matching indexed instances of one study, each with its series, in series then
    InstanceNumber order (the same order WADO-RS retrieves them in)."""
    stmt = (select(Instance, Series).join(Series, Series.id == Instance.series_pk)
            .where(Instance.study_uid == q.study_uid))
    stmt = _series_filter(stmt, q.series)
    if q.series_uid:
        stmt = stmt.where(Instance.series_uid == q.series_uid)
    if q.sop_class_uids:
        stmt = stmt.where(Instance.sop_class_uid.in_(q.sop_class_uids))
    if q.sop_uids:
        stmt = stmt.where(Instance.sop_uid.in_(q.sop_uids))
    if q.instance_number is not None:
        stmt = stmt.where(Instance.instance_number == q.instance_number)
    stmt = stmt.order_by(Instance.series_uid, Instance.instance_number, Instance.id)
    return [(i, s) for i, s in session.execute(stmt.offset(q.offset).limit(q.limit)).all()]


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


def middle_instance(session: Session, *, study_uid: str, series_uid: str) -> Instance | None:
    """The series' representative for a thumbnail: its middle indexed instance by
    InstanceNumber (the upper middle of an even count); None if it has none."""
    where = (Instance.study_uid == study_uid, Instance.series_uid == series_uid, Instance.series_pk.is_not(None))
    count = int(session.execute(select(func.count()).select_from(Instance).where(*where)).scalar_one())
    if not count:
        return None
    stmt = (select(Instance).where(*where).order_by(Instance.instance_number, Instance.id)
            .offset(count // 2).limit(1))
    return session.execute(stmt).scalar_one_or_none()


def first_series_uid(session: Session, study: Study) -> str | None:
    """The study's first series by SeriesNumber that has an indexed instance."""
    has_instances = select(Instance.id).where(Instance.study_uid == study.study_uid,
                                              Instance.series_pk == Series.id).exists()
    stmt = (select(Series.series_uid).where(Series.study_pk == study.id, has_instances)
            .order_by(Series.series_number, Series.id).limit(1))
    return session.execute(stmt).scalar_one_or_none()


def headers_of(session: Session, instance_ids: list[int]) -> dict[int, str]:
    """The indexed header JSON of each instance that has one (instance id -> JSON text)."""
    found: dict[int, str] = {}
    for start in range(0, len(instance_ids), 1000):  # bounded IN lists
        chunk = instance_ids[start:start + 1000]
        found.update({int(pk): text_ for pk, text_ in session.execute(
            select(InstanceHeader.instance_pk, InstanceHeader.header_json).where(InstanceHeader.instance_pk.in_(chunk)))})
    return found


def study_counts(session: Session, study_uid: str) -> tuple[int, int]:
    """(series, instances) of a study that are indexed."""
    n_series, n_instances = session.execute(
        select(func.count(func.distinct(Instance.series_uid)), func.count(Instance.id))
        .where(Instance.study_uid == study_uid, Instance.series_pk.is_not(None))).one()
    return int(n_series), int(n_instances)


def recently_audited(session: Session, *, actor: str, action: str, study_uid: str, since: Any) -> bool:
    """Whether ``actor`` has an ``action`` row for the study at or after ``since``."""
    return session.execute(select(AuditEvent.id).where(
        AuditEvent.object_type == "study", AuditEvent.object_id == study_uid, AuditEvent.actor == actor,
        AuditEvent.action == action, AuditEvent.at >= since).limit(1)).first() is not None

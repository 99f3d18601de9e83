"""Queries of the worklist domain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, func, or_, select
from sqlalchemy.orm import Session

from relay.county.db.models import Order, Patient, ReadingItem, Site, Study, User
from relay.county.studies.repository import has_modality

OPEN_STATES = ("queued", "assigned", "reading")


@dataclass(frozen=True, slots=True)
class Filters:
    """What a reader narrowed the worklist to; ``None`` / ``False`` means no narrowing.

    ``mine`` (held by the caller) with ``unassigned`` keeps the studies the caller holds
    *or* nobody holds (what they can work on); either alone keeps just that. ``patient``
    is a substring of the patient's name or ID, case-insensitive."""

    priority: str | None = None
    modality: str | None = None
    site: str | None = None
    state: str | None = None
    mine: bool = False
    unassigned: bool = False
    patient: str | None = None


def _compact(column: Any) -> ColumnElement[str]:
    """A DICOM person name without component separators and spaces, lower case, so that
    '李娜', 'li na' and 'LiNa' all find 'Li^Na=李^娜'."""
    return func.lower(func.replace(func.replace(column, "^", ""), " ", ""))


def _patient(text: str) -> ColumnElement[bool]:
    found = [func.lower(Patient.patient_id).contains(text.lower(), autoescape=True)]
    if name := "".join(text.replace("^", "").split()).lower():
        found += [_compact(Patient.name).contains(name, autoescape=True),
                  _compact(Study.patient_name).contains(name, autoescape=True)]
    return or_(*found)


def _where(f: Filters, user_id: int) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if f.priority is not None:
        clauses.append(Study.priority == f.priority)
    if f.state is not None:
        clauses.append(Study.state == f.state)
    if f.site is not None:
        clauses.append(Site.name == f.site)
    if f.modality is not None:  # one code of the backslash-separated list, not a substring
        clauses.append(has_modality(f.modality))
    held = [ReadingItem.assigned_user_id == user_id] if f.mine else []
    if f.unassigned:
        held.append(ReadingItem.assigned_user_id.is_(None))
    if held:
        clauses.append(or_(*held))
    if f.patient and f.patient.strip():
        clauses.append(_patient(f.patient.strip()))
    return clauses


def open_items(session: Session, *, site_id: int | None, limit: int, user_id: int,
               filters: Filters = Filters()) -> list[Row[Any]]:
    """Open reading items, most urgent then oldest first; only ``site_id``'s when given,
    and only those matching ``filters`` (``user_id``: whose are "mine"). Each row: study,
    patient, site, item, holder's username, the (candidate) order's requested procedure."""
    stmt = (
        select(Study, Patient, Site, ReadingItem, User.username, Order.procedure_description)
        .join(ReadingItem, ReadingItem.study_pk == Study.id)
        .outerjoin(User, User.id == ReadingItem.assigned_user_id)
        .outerjoin(Order, Order.id == Study.order_pk)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(Site, Site.id == Study.site_id)
        .where(Study.state.in_(OPEN_STATES), *_where(filters, user_id))
        .order_by(ReadingItem.priority_rank, ReadingItem.queued_at, Study.id)
        .limit(limit)
    )
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return list(session.execute(stmt).all())  # type: ignore[arg-type]


def choices(session: Session, *, site_id: int | None) -> tuple[list[str], list[str]]:
    """(township names, distinct ``modalities`` values of open studies) for the filter
    menus; only ``site_id``'s when given."""
    sites = select(Site.name).order_by(Site.name)
    modalities = select(Study.modalities).distinct().where(Study.state.in_(OPEN_STATES))
    if site_id is not None:
        sites, modalities = sites.where(Site.id == site_id), modalities.where(Study.site_id == site_id)
    return list(session.scalars(sites)), list(session.scalars(modalities))

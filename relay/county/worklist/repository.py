"""Queries of the worklist domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from relay.county.db.models import Patient, ReadingItem, Site, Study, User

OPEN_STATES = ("queued", "assigned", "reading")


def open_items(session: Session, *, site_id: int | None, limit: int) -> list[Row[Any]]:
    """Open reading items, most urgent then oldest first; only ``site_id``'s when given."""
    stmt = (
        select(Study, Patient, Site, ReadingItem, User.username)
        .join(ReadingItem, ReadingItem.study_pk == Study.id)
        .outerjoin(User, User.id == ReadingItem.assigned_user_id)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(Site, Site.id == Study.site_id)
        .where(Study.state.in_(OPEN_STATES))
        .order_by(ReadingItem.priority_rank, ReadingItem.queued_at, Study.id)
        .limit(limit)
    )
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return list(session.execute(stmt).all())  # type: ignore[arg-type]

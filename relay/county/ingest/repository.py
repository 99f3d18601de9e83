"""Queries of the ingest domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.db.models import Instance, QuarantinedInstance
from relay.county.db.upsert import insert_ignore


def instance_by_sop(session: Session, sop_uid: str) -> Instance | None:
    return session.execute(select(Instance).where(Instance.sop_uid == sop_uid)).scalar_one_or_none()


def insert_instance(session: Session, values: dict[str, object]) -> tuple[int, bool]:
    """Insert the instance row unless its SOP Instance UID is already indexed."""
    return insert_ignore(session, Instance, values, keys=["sop_uid"])


def insert_quarantine(session: Session, values: dict[str, object]) -> tuple[int, bool]:
    return insert_ignore(session, QuarantinedInstance, values, keys=["sop_uid", "sha256"])

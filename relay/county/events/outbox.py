"""Write events into the outbox inside the caller's transaction; read and mark them."""

from __future__ import annotations

import enum
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import OutboxEvent


class Topic(enum.StrEnum):
    """Routing keys on the ``relay.events`` topic exchange."""

    STUDY_ARRIVED = "study.arrived"
    """A study's first instance was indexed at the county; it is on the reading queue."""
    STUDY_ESCALATED = "study.escalated"
    """A study's priority was raised (a STAT instance arrived for it)."""
    STUDY_REOPENED = "study.reopened"
    """Instances arrived for a study already signed: it is back on the queue for an addendum."""
    STUDY_ASSIGNED = "study.assigned"
    """A reader holds the study: claimed by hand, or given by automatic (re)assignment."""
    STUDY_SIGNED = "study.signed"
    """A report or an addendum was signed."""
    REPORT_DELIVERED = "report.delivered"
    """The township's edge stored a signed report into the township PACS."""
    REPORT_ACKNOWLEDGED = "report.acknowledged"
    """The township technician saw or printed the report."""
    CRITICAL_ESCALATED = "critical.escalated"
    """Nobody at the township acknowledged a critical result in time: the county's lead must act."""
    CRITICAL_RESULT = "critical.result"
    """A signed report carries a critical finding (危急值): the township must know at once."""


def emit(session: Session, topic: Topic, payload: dict[str, Any]) -> None:
    """Add an event to the caller's open transaction: it exists only if that commits.

    Payloads carry identifiers (UIDs, site, priority, modality), never patient data.
    """
    session.add(OutboxEvent(topic=topic.value, payload=json.dumps(payload, ensure_ascii=False),
                            created_at=now_utc()))


def claim_unpublished(session: Session, *, limit: int) -> list[OutboxEvent]:
    """The oldest unpublished events, locked so that two publishers do not both take them."""
    stmt = (select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.execute(stmt).scalars())


def mark_published(session: Session, ids: list[int]) -> None:
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(published_at=now_utc()))


def delete_published(session: Session, *, older_than: timedelta, limit: int) -> int:
    """Delete up to ``limit`` events published more than ``older_than`` ago, oldest first;
    return how many. An event not yet published is never deleted, however old."""
    doomed = (select(OutboxEvent.id)
              .where(OutboxEvent.published_at.is_not(None), OutboxEvent.published_at < now_utc() - older_than)
              .order_by(OutboxEvent.published_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        doomed = doomed.with_for_update(skip_locked=True)  # another publisher's batch: leave it
    result = session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(doomed)))
    return int(result.rowcount)  # type: ignore[attr-defined]

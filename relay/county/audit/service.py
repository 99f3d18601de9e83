"""Append to and verify the audit chain.

Each row's hash covers the previous row's hash and its own fields in a canonical
JSON form. Appending reads the chain's end and inserts after it; a unique
``prev_hash`` makes a concurrent second writer fail and retry, so the chain never
forks whichever replica writes. Details carry identifiers, never patient data.

Retention: audit rows are kept for at least RETENTION_MIN (6 months, the issue's floor)
and in fact forever: nothing in the relay deletes them (no prune task, no cascade), and
PostgreSQL refuses UPDATE and DELETE on the table (trigger ``audit_events_append_only``).
A county that must archive older years exports them first (GET /api/audit/export.xml),
and a DBA removes them deliberately, which `relay audit verify` then reports as a cut.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from relay.county.auth.service import now_utc
from relay.county.db.models import AuditEvent

log = logging.getLogger(__name__)

GENESIS = "0" * 64
RETENTION_MIN = timedelta(days=183)
"""Audit rows are never removed before this age (nothing removes them at all; see above)."""
APPEND_TRIES = 20
"""Attempts to append when other writers keep winning the race for the chain's end."""


class Action(enum.StrEnum):
    """What was done. Names follow the IHE ATNA event they map to."""

    LOGIN = "login"
    """A user authenticated (ATNA User Authentication)."""
    LOGIN_FAILED = "login.failed"
    """Wrong username or password."""
    STUDY_RETRIEVE = "study.retrieve"
    """Instances or metadata of a study were sent to someone (DICOM Instances Accessed)."""
    STUDY_OPEN = "study.open"
    """A reader opened a study to read it."""
    STUDY_CLAIM = "study.claim"
    """A reader took a study from the queue."""
    STUDY_RELEASE = "study.release"
    """A study went back to the queue."""
    USER_CREATE = "user.create"
    """A login was created (Security Alert: user security attributes changed)."""
    SITE_CREATE = "site.create"
    """A township site and its edge credential were created."""
    SITE_REVOKE = "site.revoke"
    """A site's edge credential was revoked."""
    DEAD_LETTER_RETRY = "dead_letter.retry"
    """An administrator retried work that had given up."""
    USER_UPDATE = "user.update"
    """A login's role, competences, duty or site changed (Security Alert)."""
    REPORT_DRAFT = "report.draft"
    """A report draft was created or edited (ATNA Patient Record, create)."""
    REPORT_SIGN = "report.sign"
    """A report was signed (ATNA Patient Record, update)."""
    REPORT_ADDENDUM = "report.addendum"
    """An addendum was added to a signed report (ATNA Patient Record, create)."""
    EXPORT = "export"
    """Data left the system in bulk: a TAT CSV, an audit export (ATNA Export)."""
    REPORT_ACKNOWLEDGE = "report.acknowledge"
    """A township technician acknowledged a signed report on the edge's page (actor: the
    technician's username; the detail holds the technician's time)."""
    SITE_TECHNICIANS = "site.technicians"
    """A township's edge fetched its technicians' login hashes for its offline login cache."""


@dataclass(frozen=True, slots=True)
class Entry:
    actor: str
    role: str
    action: Action
    object_type: str = ""
    object_id: str = ""
    outcome: str = "success"
    source: str = ""
    detail: str = ""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def chain_hash(prev_hash: str, at: datetime, entry: Entry | AuditEvent) -> str:
    """SHA-256 of the previous hash and this event's fields, canonically encoded."""
    fields = [prev_hash, _iso(at), entry.actor, entry.role, str(entry.action), entry.object_type,
              entry.object_id, entry.outcome, entry.source, entry.detail]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _append_once(session: Session, entry: Entry) -> AuditEvent:
    last = session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar_one_or_none()
    prev = last or GENESIS
    at = now_utc()
    row = AuditEvent(at=at, actor=entry.actor[:128], role=entry.role[:32], action=entry.action.value,
                     object_type=entry.object_type[:32], object_id=entry.object_id[:128],
                     outcome=entry.outcome[:16], source=entry.source[:64], detail=entry.detail,
                     prev_hash=prev, hash="")
    row.hash = chain_hash(prev, at, row)
    session.add(row)
    session.commit()
    return row


def append(sessions: sessionmaker[Session], entry: Entry) -> AuditEvent:
    """Append ``entry`` in a transaction of its own (a failed action is audited too)."""
    for _ in range(APPEND_TRIES):
        with sessions() as session:
            try:
                return _append_once(session, entry)
            except IntegrityError:
                session.rollback()  # another writer took the chain's end; read it again
    raise RuntimeError(f"could not append to the audit chain in {APPEND_TRIES} tries")


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def verify(session: Session, *, batch: int = 5000) -> Verification:
    """Walk the whole chain in order; report the first row whose link or hash is wrong."""
    prev, checked, after = GENESIS, 0, 0
    while True:
        rows = session.execute(select(AuditEvent).where(AuditEvent.id > after)
                               .order_by(AuditEvent.id).limit(batch)).scalars().all()
        if not rows:
            return Verification(True, checked)
        for row in rows:
            if row.prev_hash != prev:
                return Verification(False, checked, row.id, "does not follow the row before it (a row was removed or inserted)")
            if chain_hash(prev, row.at, row) != row.hash:
                return Verification(False, checked, row.id, "its content was changed after it was written")
            prev, checked, after = row.hash, checked + 1, row.id
        session.expunge_all()

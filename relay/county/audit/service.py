"""Append to and verify the audit chain.

Each row's hash covers the previous row's hash and its own fields in a canonical
JSON form. Appending reads the chain's end and inserts after it; a unique
``prev_hash`` makes a concurrent second writer fail and retry, so the chain never
forks whichever replica writes. Details carry identifiers, never patient data.

Retention: audit rows are kept for at least RETENTION_MIN (6 months, the required minimum)
and in fact forever: nothing in the relay deletes them (no prune task, no cascade), and
the database refuses UPDATE, DELETE and (PostgreSQL) TRUNCATE on the table (triggers of
migrations 0008 and 0028, SQLite too). A county that must archive older years exports
them first (GET /api/audit/export.xml), and a DBA removes them deliberately, which
`relay audit verify` then reports as a cut.

The chain is unkeyed: whoever can write the table could recompute it. Signed checkpoints
kept outside the database (relay.county.audit.checkpoint) anchor it; ``verify`` compares
the rows with them.
"""

from __future__ import annotations

import enum
from collections import deque
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from relay.county.audit.checkpoint import Anchors, Checkpoint
from relay.county.clock import now_utc
from relay.county.db.models import AuditEvent
from relay.dicom.vocab import Role

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
    SIGNING_KEY_CREATE = "signing_key.create"
    """A reader made a signing key (Security Alert: user security attributes changed)."""
    SIGNING_KEY_REVOKE = "signing_key.revoke"
    """A signing key was revoked, with its reason (Security Alert)."""
    REPORT_ACKNOWLEDGE = "report.acknowledge"
    """A township technician acknowledged a signed report on the edge's page (actor: the
    technician's username; the detail holds the technician's time)."""
    SITE_TECHNICIANS = "site.technicians"
    """A township's edge fetched its technicians' login hashes for its offline login cache."""
    ORDER_CREATE = "order.create"
    """An order (申请单) arrived from the HIS or the registration page (ATNA Order Record, create)."""
    ORDER_UPDATE = "order.update"
    """An order's fields changed (ATNA Order Record, update)."""
    ORDER_CANCEL = "order.cancel"
    """An order was cancelled by the HIS (ATNA Order Record, update)."""
    PATIENT_UPDATE = "patient.update"
    """The HIS changed a patient's demographics (HL7 ADT^A08; ATNA Patient Record, update)."""
    PATIENT_MERGE = "patient.merge"
    """The HIS merged one patient ID into another (HL7 ADT^A40; ATNA Patient Record, update)."""
    STUDY_RECONCILE = "study.reconcile"
    """An administrator linked a study to an order, split it off, or corrected its identity."""
    HIS_DELIVERY = "his.delivery"
    """A signed report was acknowledged (or refused) by the HIS (ATNA Export)."""


class Actor(Protocol):
    """Who did something, as the trail records it (relay.county.auth.service.Principal is one;
    the trail does not import auth, which records logins into it)."""

    @property
    def username(self) -> str: ...

    @property
    def role(self) -> Role: ...


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
    checkpoints: int = 0
    """Signed checkpoints whose head the rows matched."""
    anchored: int = 0
    """Events covered by the newest matching checkpoint (the rest are only chained)."""
    latest_checkpoint_at: datetime | None = None
    missing_after_id: int | None = None
    """A cut tail: the last event left, after which ``missing_count`` events were removed."""
    missing_count: int | None = None
    problems: tuple[str, ...] = ()
    """Every checkpoint problem found (a bad signature, an unreadable line, no key)."""


def _usable(anchors: Anchors | None) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints whose signature verifies under the county's key, and the problems."""
    if anchors is None:
        return [], []
    problems = list(anchors.problems)
    if anchors.public_key is None:
        return [], problems
    usable = []
    for cp in anchors.checkpoints:
        problem = cp.signature_problem(anchors.public_key)
        if problem:
            problems.append(problem)
        else:
            usable.append(cp)
    return usable, problems


def verify(session: Session, *, anchors: Anchors | None = None, batch: int = 5000) -> Verification:
    """Walk the whole chain in order; report the first row whose link or hash is wrong, then
    compare it with the signed checkpoints of ``anchors``: a head whose hash differs (the
    chain was rewritten and recomputed), a count that differs, a head that is gone (the
    newest rows were cut: named as how many are missing after which event), or a
    checkpoint whose signature fails."""
    usable, problems = _usable(anchors)
    by_head: dict[int, list[Checkpoint]] = {}
    for cp in usable:
        by_head.setdefault(cp.head_id, []).append(cp)
    heads = deque(sorted(by_head))
    matched: list[Checkpoint] = []
    prev, checked, after = GENESIS, 0, 0
    since_anchor: int | None = None
    """The first event after the newest checkpoint that matched (where a rewrite may begin)."""
    last_id: int | None = None

    def bad(first_bad_id: int | None, reason: str, **kw: Any) -> Verification:
        return Verification(False, checked, first_bad_id, reason, checkpoints=len(matched),
                            problems=tuple(problems), **kw)

    def gone(cp: Checkpoint) -> Verification:
        """``cp``'s head is not in the table: the events up to it were cut (later ones may have
        been appended to what was left)."""
        missing = cp.count - checked
        after_text = f"#{last_id}" if last_id is not None else "the start of the trail"
        if missing <= 0:
            return bad(cp.head_id, f"event #{cp.head_id} of {cp.describe()} is gone: removed and the chain "
                       "recomputed")
        return bad(None, f"events were removed: {missing} events missing after {after_text} ({cp.describe()}; "
                   f"the table has {checked} through there)", missing_after_id=last_id, missing_count=missing)

    while True:
        rows = session.execute(select(AuditEvent).where(AuditEvent.id > after)
                               .order_by(AuditEvent.id).limit(batch)).scalars().all()
        if not rows:
            break
        for row in rows:
            if row.prev_hash != prev:
                return bad(row.id, "does not follow the row before it (a row was removed or inserted)")
            if chain_hash(prev, row.at, row) != row.hash:
                return bad(row.id, "its content was changed after it was written")
            if heads and heads[0] < row.id:  # heads that are gone, with events appended after the cut
                skipped: list[Checkpoint] = []
                while heads and heads[0] < row.id:
                    skipped.extend(by_head[heads.popleft()])
                return gone(max(skipped, key=lambda c: c.count))
            prev, checked, after, last_id = row.hash, checked + 1, row.id, row.id
            since_anchor = row.id if since_anchor is None else since_anchor
            if heads and heads[0] == row.id:
                heads.popleft()
                for cp in by_head[row.id]:
                    if cp.head_hash != row.hash:
                        return bad(since_anchor, f"the chain was rewritten: event #{row.id} is not the one of "
                                   f"{cp.describe()}; an event in #{since_anchor}-#{row.id} was changed, removed "
                                   "or inserted and the hashes after it recomputed")
                    if cp.count != checked:
                        return bad(since_anchor, f"{checked} events through #{row.id}, but {cp.describe()}: "
                                   f"events in #{since_anchor}-#{row.id} were removed or inserted and the hashes "
                                   "recomputed")
                    matched.append(cp)
                since_anchor = None
        session.expunge_all()
    if heads:
        return gone(max((cp for h in heads for cp in by_head[h]), key=lambda c: c.count))
    newest = max(matched, key=lambda c: c.count) if matched else None
    kw: dict[str, Any] = {"anchored": newest.count if newest else 0,
                          "latest_checkpoint_at": newest.at if newest else None}
    if problems:
        return bad(None, problems[0], **kw)
    return Verification(True, checked, checkpoints=len(matched), **kw)

"""Critical results (危急值): alert the township at once, escalate when nobody answers.

Run in rounds by a thread of every worker process. A round posts the webhook for each
signed critical report not yet notified, and escalates each one that nobody at the
township acknowledged within ``critical_escalate_minutes``: a ``critical.escalated``
event plus a POST to ``critical_escalation_url``, both naming the lead(s) the duty
roster has on duty at that moment (值班组长: username and display name). With no lead on
duty it escalates all the same and says so. Payloads carry identifiers, never patient data.

Several workers run rounds at once (one per ``relay worker --queues …`` process), so each
send is claimed first: a conditional UPDATE in a short transaction that only one round
wins (``critical_claimed_at`` / ``escalation_claimed_at``), committed before the POST. The
POST runs outside any transaction; then the result is recorded (the mark, and for an
escalation its event) or, on failure, the claim released so the next round tries again.
A round that dies between the POST and the record leaves its claim, which another round
takes again after ``CLAIM_LEASE_S``: delivery is at least once, and every POST carries an
``Idempotency-Key`` (also ``idempotency_key`` in the body), the same on every resend.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from relay.config import CountySettings
from relay.county.clock import now_utc
from relay.county.db.models import Report, ReportDelivery, Site, Study, User
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.reading.roster import leads_on_duty

log = logging.getLogger(__name__)

ROUND_S = 30.0
"""Seconds between alert rounds."""
CLAIM_LEASE_S = 120.0
"""Seconds a round's claim on a send holds before another round may take it again: many
times the POST timeout (10 s), so only a round that died mid-send is overtaken."""

Post = Callable[[str, dict[str, Any]], bool]


class Alert(enum.StrEnum):
    """The two sends of a critical result."""

    RESULT = "critical.result"
    """The township webhook, at once after signing."""
    ESCALATED = "critical.escalated"
    """The escalation to the on-duty lead, when the township has not acknowledged in time."""


_COLUMNS: dict[Alert, tuple[InstrumentedAttribute[datetime | None], InstrumentedAttribute[datetime | None]]] = {
    Alert.RESULT: (ReportDelivery.critical_claimed_at, ReportDelivery.critical_notified_at),
    Alert.ESCALATED: (ReportDelivery.escalation_claimed_at, ReportDelivery.escalated_at),
}
"""Per send: (its claim column, its done column)."""


def idempotency_key(kind: Alert, delivery_id: int) -> str:
    """The key a receiver dedupes on: one per delivery and kind, the same on every resend."""
    return f"{kind.value}:{delivery_id}"


def http_post(url: str, payload: dict[str, Any]) -> bool:
    headers = {"Idempotency-Key": str(payload.get("idempotency_key", ""))}
    try:
        return httpx.post(url, json=payload, headers=headers, timeout=10).is_success
    except httpx.HTTPError as exc:
        log.warning("critical-result webhook failed: %s", type(exc).__name__)
        return False


NO_LEAD = "no lead on duty"
"""The escalation's ``note`` when the roster has no lead on duty at that moment."""


def _critical(session: Session) -> list[tuple[ReportDelivery, Report, Study, str]]:
    rows = session.execute(
        select(ReportDelivery, Report, Study, Site.name).join(Report, Report.id == ReportDelivery.report_pk)
        .join(Study, Study.id == Report.study_pk).join(Site, Site.id == ReportDelivery.site_id)
        .where(Report.critical.is_(True), ReportDelivery.acknowledged_at.is_(None))).all()
    return [(d, r, s, site) for d, r, s, site in rows]


def _payload(kind: Alert, delivery: ReportDelivery, report: Report, study: Study, site: str) -> dict[str, Any]:
    return {"event": kind.value, "idempotency_key": idempotency_key(kind, delivery.id),
            "study_instance_uid": study.study_uid, "site": site, "revision": report.revision,
            "signed_at": report.signed_at.isoformat() if report.signed_at else None,
            "delivery_id": delivery.id, "delivered": delivery.delivered_at is not None}


def _escalation(base: dict[str, Any], leads: list[User]) -> dict[str, Any]:
    named = [{"username": u.username, "display_name": u.display_name} for u in leads]
    return {**base, "leads": named, "note": "" if named else NO_LEAD}


def open_critical(*, session: Session) -> list[tuple[ReportDelivery, Study, str]]:
    """Critical results nobody at the township acknowledged yet, oldest first, with site name."""
    return [(d, s, site) for d, _r, s, site in sorted(_critical(session), key=lambda row: row[0].created_at)]


def escalations_for(*, session: Session, username: str, admin: bool, at: datetime,
                    zone: ZoneInfo) -> list[tuple[ReportDelivery, Study, str]]:
    """Escalated critical results still unacknowledged that this person must be told of on
    their portal pages (no escalation URL needed): a lead it was escalated to, any lead on duty
    now (one who came on duty after the escalation too), and, when no lead was on duty to
    receive it, the administrators. Oldest first, with the site name."""
    on_duty = {u.username for u in leads_on_duty(session=session, at=at, zone=zone)}
    found = []
    for delivery, study, site in open_critical(session=session):
        if delivery.escalated_at is None:
            continue
        to = {n for n in delivery.escalated_to.split(",") if n}
        if username in to or username in on_duty or (admin and not to):
            found.append((delivery, study, site))
    return found


@dataclass(frozen=True, slots=True)
class _Send:
    """One send a round found due, read before any claim (plain values, no ORM rows)."""

    kind: Alert
    delivery_id: int
    url: str | None
    payload: dict[str, Any]
    leads: tuple[str, ...] = ()
    study_uid: str = ""
    site: str = ""


def _due(session: Session, settings: CountySettings, now: datetime) -> list[_Send]:
    """The sends due in this round, oldest delivery first; the read transaction is ended."""
    due = now - timedelta(minutes=settings.critical_escalate_minutes)
    leads: list[User] | None = None
    sends: list[_Send] = []
    for delivery, report, study, site in sorted(_critical(session), key=lambda row: row[0].id):
        if delivery.critical_notified_at is None:
            sends.append(_Send(Alert.RESULT, delivery.id, settings.critical_webhook_url,
                               _payload(Alert.RESULT, delivery, report, study, site)))
        if delivery.escalated_at is None and delivery.created_at <= due:
            if leads is None:
                leads = leads_on_duty(session=session, at=now, zone=ZoneInfo(settings.timezone))
            payload = _escalation(_payload(Alert.ESCALATED, delivery, report, study, site), leads)
            sends.append(_Send(Alert.ESCALATED, delivery.id, settings.critical_escalation_url, payload,
                               tuple(u.username for u in leads), study.study_uid, site))
    session.rollback()
    return sends


def _claim(session: Session, send: _Send, now: datetime) -> bool:
    """Take the send for this round (committed at once); False: done, or another round has it."""
    claimed, done = _COLUMNS[send.kind]
    stale = now - timedelta(seconds=CLAIM_LEASE_S)
    won = session.execute(
        update(ReportDelivery).where(ReportDelivery.id == send.delivery_id, done.is_(None),
                                     ReportDelivery.acknowledged_at.is_(None),
                                     or_(claimed.is_(None), claimed < stale))
        .values({claimed: now}).execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    session.commit()
    return bool(won)


def _release(session: Session, send: _Send, now: datetime) -> None:
    """Give the claim back after a failed POST, so that the next round tries again."""
    claimed, _done = _COLUMNS[send.kind]
    session.execute(update(ReportDelivery).where(ReportDelivery.id == send.delivery_id, claimed == now)
                    .values({claimed: None}).execution_options(synchronize_session=False))
    session.commit()


def _record(session: Session, send: _Send, now: datetime) -> bool:
    """Mark the send done (an escalation: whom, and its event), once; False: already marked."""
    claimed, done = _COLUMNS[send.kind]
    values: dict[Any, Any] = {done: now, claimed: None}
    if send.kind is Alert.ESCALATED:
        values[ReportDelivery.escalated_to] = ",".join(send.leads)
    won = session.execute(update(ReportDelivery).where(ReportDelivery.id == send.delivery_id, done.is_(None))
                          .values(values).execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    if won and send.kind is Alert.ESCALATED:
        outbox.emit(session, Topic.CRITICAL_ESCALATED, send.payload)
    session.commit()
    return bool(won)


def _send(session: Session, send: _Send, post: Post, now: datetime) -> bool:
    """Claim, commit, POST outside the transaction, record; True if this round delivered it."""
    if not _claim(session, send, now):
        return False
    if send.url and not post(send.url, send.payload):
        _release(session, send, now)
        return False
    if not _record(session, send, now):
        return False
    if send.kind is Alert.ESCALATED:
        log.warning("critical result escalated study=%s site=%s delivery=%d leads=%s", send.study_uid,
                    send.site, send.delivery_id, ",".join(send.leads) or "-")
    return True


def alert_round(*, session: Session, settings: CountySettings, post: Post = http_post,
                now: datetime | None = None) -> tuple[int, int]:
    """One round; returns (notified, escalated) by this round. Safe to run in many processes
    at once: each send is claimed first, so exactly one round sends it."""
    now = now or now_utc()
    done = {Alert.RESULT: 0, Alert.ESCALATED: 0}
    for send in _due(session, settings, now):
        if _send(session, send, post, now):
            done[send.kind] += 1
    session.expire_all()
    return done[Alert.RESULT], done[Alert.ESCALATED]


def run_alerts(settings: CountySettings, sessions: sessionmaker[Session], stop: threading.Event) -> None:
    """Alert rounds until ``stop``; a failing round is logged and the next one tries again."""
    while not stop.is_set():
        try:
            with sessions() as session:
                alert_round(session=session, settings=settings)
        except Exception:
            log.exception("critical-result alert round failed")
        stop.wait(ROUND_S)

"""Signed reports to the HIS, at least once: one his_messages row per revision and channel.

Rows are made when a revision's renderings are stored (relay.county.flows.attach_renderings,
in the transaction that offers the delivery to the edge), one per channel configured then.
Rounds run in the worker's main process (relay.cli), several at once when several workers
run: as in relay.county.reports.alerts, each send is claimed first by a conditional UPDATE
committed at once (``claimed_at``, a lease for a round that died), sent outside any
transaction, and its result recorded after. The HIS dedupes on MSH-10 / the resource id,
the same on every resend. A refusal (AE/AR/CE/CR, HTTP 4xx) is ``rejected``: shown red and
retried like silence, with the wait doubling up to ``his_retry_max_s``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from relay.config import CountySettings
from relay.county.audit.service import Action, Entry, append
from relay.county.clock import now_utc
from relay.county.context import County
from relay.county.db.models import HisMessage, Report, Study
from relay.county.db.upsert import insert_ignore
from relay.county.his import content, fhir, mllp_client, oru
from relay.dicom.orders import OrderStatus

log = logging.getLogger(__name__)

ROUND_S = 10.0
"""Seconds between rounds when a round found nothing to send."""
BATCH = 50
"""Messages a round takes at most; the next round continues."""


class Channel(enum.StrEnum):
    HL7 = "hl7"
    """HL7 v2.5 ORU^R01 over MLLP (RELAY_HIS_MLLP)."""
    FHIR = "fhir"
    """FHIR R4 DiagnosticReport PUT (RELAY_HIS_FHIR_URL)."""


class State(enum.StrEnum):
    PENDING = "pending"
    """Not acknowledged yet: never sent, or no answer (silence, refused connection, 5xx)."""
    ACKED = "acked"
    """The HIS accepted it (AA/CA, HTTP 2xx); never sent again."""
    REJECTED = "rejected"
    """The HIS refused it (AE/AR/CE/CR, HTTP 4xx): retried with backoff, shown red."""


def channels(settings: CountySettings) -> list[Channel]:
    """The channels configured now."""
    return [c for c, on in ((Channel.HL7, settings.his_mllp_address), (Channel.FHIR, settings.his_fhir_url)) if on]


def message_id(report_pk: int, channel: Channel) -> str:
    """MSH-10 / FHIR resource id: at most 20 characters (ST), the same on every resend."""
    return f"relay-{report_pk}-{channel.value}"


def claim_lease_s(settings: CountySettings) -> float:
    """How long a claim holds: well past one attempt's connect + answer timeouts."""
    return max(120.0, 4 * settings.his_timeout_s)


def create_messages(*, session: Session, settings: CountySettings, report: Report, study: Study) -> int:
    """One pending row per configured channel for this signed revision (in the caller's
    transaction; idempotent on report + channel); returns how many were new."""
    order = content.linked_order(session, study)
    cancelled = order is not None and order.status == OrderStatus.CANCELLED.value
    now, made = now_utc(), 0
    for channel in channels(settings):
        values = {"report_pk": report.id, "channel": channel.value, "order_pk": order.id if order else None,
                  "message_id": message_id(report.id, channel), "state": State.PENDING.value,
                  "order_cancelled": cancelled, "attempts": 0, "next_attempt_at": now, "last_error": "",
                  "ack_code": "", "created_at": now}
        _pk, inserted = insert_ignore(session, HisMessage, values, keys=["report_pk", "channel"])
        made += inserted
    return made


@dataclass(frozen=True, slots=True)
class Outcome:
    state: State
    ack_code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    report_pk: int
    channel: Channel
    message_id: str
    attempts: int
    state: str
    ack_code: str


def _due_filter(now: datetime, lease_s: float) -> list[Any]:
    stale = now - timedelta(seconds=lease_s)
    return [HisMessage.state != State.ACKED.value, HisMessage.next_attempt_at <= now,
            or_(HisMessage.claimed_at.is_(None), HisMessage.claimed_at < stale)]


def _claim(session: Session, row_id: int, now: datetime, lease_s: float) -> _Claim | None:
    """Take the message for this round (committed at once); None: acked, not due, or taken."""
    won = session.execute(
        update(HisMessage).where(HisMessage.id == row_id, *_due_filter(now, lease_s)).values(claimed_at=now)
        .returning(HisMessage.id, HisMessage.report_pk, HisMessage.channel, HisMessage.message_id,
                   HisMessage.attempts, HisMessage.state, HisMessage.ack_code)
        .execution_options(synchronize_session=False)).one_or_none()
    session.commit()
    return None if won is None else _Claim(won[0], won[1], Channel(won[2]), won[3], won[4], won[5], won[6])


def _send_hl7(settings: CountySettings, report: content.OutgoingReport, claim: _Claim) -> Outcome:
    address = settings.his_mllp_address
    if address is None:
        return Outcome(State.PENDING, error="the HL7 channel is off (RELAY_HIS_MLLP)")
    codec = oru.CHARSETS[settings.his_charset]
    payload = oru.build_oru(report, message_id=claim.message_id, charset=settings.his_charset,
                            facility=(settings.his_sending_facility, settings.his_receiving_application,
                                      settings.his_receiving_facility),
                            at=now_utc(), zone=ZoneInfo(settings.timezone))
    try:
        ack = mllp_client.parse_ack(mllp_client.send(*address, payload, timeout_s=settings.his_timeout_s),
                                    codec=codec)
    except mllp_client.MllpError as exc:
        return Outcome(State.PENDING, error=str(exc))
    if ack.control_id != claim.message_id:
        return Outcome(State.PENDING, ack.code, f"ACK for another message (MSA-2 {ack.control_id[:40]!r})")
    if ack.code in mllp_client.ACCEPTED:
        return Outcome(State.ACKED, ack.code)
    if ack.code in mllp_client.REJECTED:
        return Outcome(State.REJECTED, ack.code, ack.text or f"refused with {ack.code}")
    return Outcome(State.PENDING, ack.code[:8], f"unknown MSA-1 {ack.code[:8]!r}")


def _send_fhir(settings: CountySettings, report: content.OutgoingReport, claim: _Claim) -> Outcome:
    if not settings.his_fhir_url:
        return Outcome(State.PENDING, error="the FHIR channel is off (RELAY_HIS_FHIR_URL)")
    resource = fhir.build_diagnostic_report(report, resource_id=claim.message_id,
                                            system=settings.his_identifier_system, zone=ZoneInfo(settings.timezone))
    try:
        answer = fhir.put_report(settings.his_fhir_url, resource, token=settings.his_fhir_out_token,
                                 timeout_s=settings.his_timeout_s)
    except fhir.FhirUnreachable as exc:
        return Outcome(State.PENDING, error=f"no answer ({exc})")
    code = str(answer.status)
    if 200 <= answer.status < 300:
        return Outcome(State.ACKED, code)
    if 400 <= answer.status < 500 and answer.status not in (408, 429):
        return Outcome(State.REJECTED, code, answer.text or f"HTTP {code}")
    return Outcome(State.PENDING, code, answer.text or f"HTTP {code}")


SENDERS = {Channel.HL7: _send_hl7, Channel.FHIR: _send_fhir}


def _attempt(county: County, claim: _Claim) -> tuple[Outcome, bool | None]:
    """Read what to send (the read transaction ended), send it; (outcome, order cancelled now)."""
    try:
        with county.sessions() as session:
            report = content.load(session=session, store=county.store, report_pk=claim.report_pk)
    except Exception as exc:  # missing PDF or report, store down: wait and try again
        return Outcome(State.PENDING, error=f"not ready: {type(exc).__name__}"), None
    try:
        outcome = SENDERS[claim.channel](county.settings, report, claim)
    except Exception as exc:  # a message we cannot build must not stop the round
        outcome = Outcome(State.PENDING, error=f"could not send: {type(exc).__name__}")
    return outcome, (report.order.cancelled if report.order is not None else None)


def backoff_s(settings: CountySettings, attempts: int) -> float:
    """Wait after the ``attempts``-th failed attempt: base, doubled each time, capped."""
    return float(min(settings.his_retry_max_s, settings.his_retry_base_s * 2 ** min(attempts - 1, 30)))


def _record(session: Session, settings: CountySettings, claim: _Claim, outcome: Outcome,
            cancelled: bool | None) -> None:
    done = now_utc()
    attempts = claim.attempts + 1
    values: dict[Any, Any] = {"claimed_at": None, "attempts": attempts, "last_attempt_at": done,
                              "state": outcome.state.value, "ack_code": outcome.ack_code[:8],
                              "last_error": outcome.error}
    if outcome.state is State.ACKED:
        values["acked_at"] = done
    else:
        values["next_attempt_at"] = done + timedelta(seconds=backoff_s(settings, attempts))
    if cancelled:
        values["order_cancelled"] = True
    session.execute(update(HisMessage).where(HisMessage.id == claim.id, HisMessage.state != State.ACKED.value)
                    .values(values).execution_options(synchronize_session=False))
    session.commit()


def _audit(county: County, claim: _Claim, outcome: Outcome) -> None:
    """On an acknowledgement, and on a refusal that is new (not the same code again)."""
    repeated = claim.state == State.REJECTED.value and claim.ack_code == outcome.ack_code
    if outcome.state is State.ACKED or (outcome.state is State.REJECTED and not repeated):
        append(county.sessions, Entry(
            actor=f"his:{claim.channel.value}", role="system", action=Action.HIS_DELIVERY, object_type="report",
            object_id=str(claim.report_pk), outcome="success" if outcome.state is State.ACKED else "failure",
            detail=f"channel={claim.channel.value} message_id={claim.message_id} ack={outcome.ack_code}"))


@dataclass(slots=True)
class RoundResult:
    acked: int = 0
    rejected: int = 0
    pending: int = 0


def his_round(*, county: County, now: datetime | None = None) -> RoundResult:
    """One round over the due messages. Safe in many processes at once: each is claimed first."""
    now = now or now_utc()
    lease = claim_lease_s(county.settings)
    result = RoundResult()
    with county.sessions() as session:
        due = list(session.execute(select(HisMessage.id).where(*_due_filter(now, lease))
                                   .order_by(HisMessage.next_attempt_at, HisMessage.id).limit(BATCH)).scalars())
        session.rollback()
        for row_id in due:
            claim = _claim(session, row_id, now, lease)
            if claim is None:
                continue
            started = time.perf_counter()
            outcome, cancelled = _attempt(county, claim)
            _record(session, county.settings, claim, outcome, cancelled)
            _audit(county, claim, outcome)
            setattr(result, outcome.state.value, getattr(result, outcome.state.value) + 1)
            log.log(logging.INFO if outcome.state is State.ACKED else logging.WARNING,
                    "his message=%s report_id=%d channel=%s attempt=%d state=%s ack=%s ms=%.1f",
                    claim.message_id, claim.report_pk, claim.channel.value, claim.attempts + 1,
                    outcome.state.value, outcome.ack_code or "-", (time.perf_counter() - started) * 1000)
    return result


def run_his(county: County, stop: threading.Event) -> None:
    """HIS rounds until ``stop``; a failing round is logged and the next one tries again."""
    while not stop.is_set():
        busy = False
        try:
            result = his_round(county=county)
            busy = (result.acked + result.rejected + result.pending) >= BATCH
        except Exception:
            log.exception("HIS delivery round failed")
        stop.wait(0 if busy else ROUND_S)


# --- the administrator's view --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageView:
    row: HisMessage
    study_uid: str
    revision: int
    kind: str
    overdue: bool


def list_messages(*, session: Session, settings: CountySettings, state: State | None = None,
                  limit: int = 200) -> list[MessageView]:
    """Rejected first, then pending oldest first (all of them, up to ``limit`` each), then the
    ``limit`` newest acknowledged."""
    query = (select(HisMessage, Study.study_uid, Report.revision, Report.kind)
             .join(Report, Report.id == HisMessage.report_pk).join(Study, Study.id == Report.study_pk))
    wanted = [state] if state is not None else [State.REJECTED, State.PENDING, State.ACKED]
    late = now_utc() - timedelta(minutes=settings.his_overdue_minutes)
    views: list[MessageView] = []
    for each in wanted:
        order = HisMessage.id.desc() if each is State.ACKED else HisMessage.id
        rows = session.execute(query.where(HisMessage.state == each.value).order_by(order).limit(limit)).all()
        views += [MessageView(m, uid, rev, kind, each is not State.ACKED and m.created_at < late)
                  for m, uid, rev, kind in rows]
    return views


def retry_now(*, session: Session, message_pk: int) -> HisMessage | None:
    """Make one message due now (an administrator fixed the HIS side); None if there is none.
    An acknowledged message stays as it is (the caller refuses)."""
    row = session.get(HisMessage, message_pk)
    if row is None:
        return None
    if row.state != State.ACKED.value:
        row.next_attempt_at = now_utc()
        session.commit()
    return row


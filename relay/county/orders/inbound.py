"""One HL7 v2 message from the HIS, applied in one transaction and answered with its ACK.

Whatever the message asks is done in one database transaction: all of it (AA) or none of
it (AE/AR, rolled back), so a refused message leaves everything stored as it was and the
HIS may send it again. Repeating an accepted message changes nothing and is AA again.
Logged: control ID, message type, sending facility, outcome and ERR location, never a
patient's name or ID.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from relay.county.audit.service import Action, Entry, append
from relay.county.orders import hl7
from relay.county.orders.hl7 import Header, Nak, Parsed
from relay.county.orders.patients import Demographics, merge_patients, update_patient
from relay.county.orders.service import OrderError, cancel_order, cancelled, upsert_order
from relay.county.orders.trail import order_entry, patient_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    ack: bytes
    code: str
    """MSA-1: AA, AE or AR."""
    header: Header
    nak: Nak | None = None


def _nak_for(exc: OrderError, p: Parsed, sequence: int) -> Nak:
    """Where in the message an order the service refused went wrong."""
    omi = p.header.message_type == "OMI"
    fields = {"site": ("PV1", 1, 3, hl7.TABLE_VALUE_NOT_FOUND),
              "accession_number": (("IPC", sequence, 1) if omi else ("OBR", sequence, 18))
              + (hl7.REQUIRED_FIELD_MISSING,),
              "placer_order_number": ("ORC", sequence, 2, hl7.TABLE_VALUE_NOT_FOUND),
              "placer_issuer": ("ORC", sequence, 2, hl7.REQUIRED_FIELD_MISSING),
              "scheduled_at": ("ORC", sequence, 7, hl7.DATA_TYPE_ERROR),
              "patient_sex": ("PID", 1, 8, hl7.TABLE_VALUE_NOT_FOUND),
              "patient_birth_date": ("PID", 1, 7, hl7.DATA_TYPE_ERROR),
              "patient_id": ("PID", 1, 3, hl7.REQUIRED_FIELD_MISSING),
              "prior_patient_id": ("MRG", 1, 1, hl7.TABLE_VALUE_NOT_FOUND)}
    seg, seq, no, code = fields.get(exc.field, ("ORC", sequence, 0, hl7.APPLICATION_INTERNAL_ERROR))
    return Nak("AE", str(exc), segment=seg, sequence=seq, field_no=no, error=code)


def _orders(session: Session, p: Parsed, zone: ZoneInfo, actor: str) -> list[Entry]:
    entries = []
    for action in hl7.order_actions(p, zone):
        order = action.order
        if action.control != hl7.CANCEL and cancelled(session, order.key):
            raise Nak("AE", f"order {order.placer_order_number!r} was cancelled: place a new order number",
                      segment="ORC", sequence=action.orc_sequence, field_no=1, error=hl7.TABLE_VALUE_NOT_FOUND)
        try:
            if action.control == hl7.CANCEL:
                result = cancel_order(session, placer_order_number=order.placer_order_number,
                                      placer_issuer=order.placer_issuer)
            else:
                result = upsert_order(session, order, zone=zone)
        except OrderError as exc:
            if exc.field == "site":
                exc = OrderError(f"PV1-3 {action.site_candidate!r} names no county township site", field="site")
            raise _nak_for(exc, p, action.orc_sequence) from exc
        entry = order_entry(result, actor=actor, source="hl7", detail=f"msg={p.header.control_id}")
        if entry is not None:
            entries.append(entry)
    return entries


def _patient(session: Session, p: Parsed, actor: str) -> list[Entry]:
    action = hl7.patient_action(p)
    d = Demographics(patient_id=action.patient_id, issuer=action.issuer, name=action.name,
                     name_pinyin=action.name_pinyin, sex=action.sex, birth_date=action.birth_date,
                     phone=action.phone)
    try:
        if action.merge_from is None:
            change = update_patient(session, d)
            what, detail = Action.PATIENT_UPDATE, f"orders={change.orders} msg={p.header.control_id}"
        else:
            change = merge_patients(session, surviving=d, prior_id=action.merge_from[0],
                                    prior_issuer=action.merge_from[1])
            what = Action.PATIENT_MERGE
            detail = (f"prior=patient:{change.prior_pk} orders={change.orders} studies={change.studies} "
                      f"msg={p.header.control_id}")
    except OrderError as exc:
        raise _nak_for(exc, p, 1) from exc
    if not change.changed:
        return []
    return [patient_entry(what, patient_pk=change.patient_pk, actor=actor, source="hl7", detail=detail)]


def _answer(header: Header, code: str, nak: Nak | None = None, *, outcome: str = "") -> Received:
    log.info("hl7 message %s %s^%s from %s: %s%s%s", header.control_id or "-", header.message_type or "-",
             header.trigger or "-", header.sending_facility or "-", code,
             f" ({outcome})" if outcome else "",
             f" ERR {nak.location or '-'} code {nak.error}" if nak is not None else "")
    return Received(ack=hl7.build_ack(header, code, nak=nak), code=code, header=header, nak=nak)


def receive(*, sessions: sessionmaker[Session], raw: bytes, zone: ZoneInfo) -> Received:
    """Apply one message (the bytes between MLLP's start and end blocks); the ACK to send."""
    header = hl7.sniff_header(raw)
    try:
        text, header = hl7.decode(raw)
        parsed = hl7.parse(text, header)
        header = hl7.read_header(parsed)
    except Nak as nak:
        return _answer(header, "AR", nak)
    kind = (header.message_type, header.trigger)
    if kind not in hl7.ORDER_TYPES | hl7.ADT_TYPES:
        return _answer(header, "AR", Nak("AR", f"message type {header.message_type}^{header.trigger} is not taken "
                                         "(ORM^O01, OMI^O23, ADT^A08, ADT^A40)", segment="MSH", field_no=9,
                                         error=hl7.UNSUPPORTED_MESSAGE_TYPE))
    actor = f"his:{header.sending_facility or header.sending_application or 'unknown'}"
    with sessions() as session:
        try:
            if kind in hl7.ORDER_TYPES:
                entries = _orders(session, parsed, zone, actor)
            else:
                entries = _patient(session, parsed, actor)
            session.commit()
        except Nak as nak:
            session.rollback()
            return _answer(header, nak.code, nak)
        except Exception as exc:
            session.rollback()
            # the frames only: a database error's message may quote the patient's values
            log.error("hl7 message %s from %s: internal error %s\n%s", header.control_id, header.sending_facility,
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            return _answer(header, "AE", Nak("AE", "internal error; nothing was stored, send it again",
                                             error=hl7.APPLICATION_INTERNAL_ERROR))
    for entry in entries:
        try:
            append(sessions, entry)
        except Exception as exc:  # stored and committed: the HIS must hear AA, not resend
            log.error("hl7 message %s: audit %s of %s not written: %s", header.control_id, entry.action.value,
                      entry.object_type, type(exc).__name__)
    return _answer(header, "AA", outcome=f"{len(entries)} changed" if entries else "unchanged")

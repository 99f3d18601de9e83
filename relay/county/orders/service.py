"""Orders (申请单) at the county: the one place an order is stored, changed or cancelled.

HL7 v2 (``relay.county.orders.hl7``), FHIR (``relay.county.orders.fhir``) and the township's
registration page (through its edge) all hand a :class:`relay.dicom.orders.Order` to
:func:`upsert_order`. Idempotent on (placer order number, issuer): the same order again is
``unchanged``; other fields are ``updated`` (revision + 1); a cancel keeps the row with
status ``cancelled`` so that every edge's worklist drops it at its next sync.

The order's patient (ID + issuer from the HIS) is a ``patients`` row like any other; it is
made or found only on a usable ID (never on a name) and its demographics are the HIS's.

Every change ends with the order matching of relay.county.orders.matching (studies that
came before their order get linked, a cancel is flagged on its study); ``completed`` is
the county's own status (a study was linked), which an HIS resending the order as
scheduled does not undo. Pass ``zone`` (the county's time zone setting) so that an order
can also find its study by patient, modality and date; without it only the Accession
Number and the Study Instance UID are tried.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Order as OrderRow
from relay.county.db.models import Patient, Site
from relay.county.db.upsert import insert_ignore
from relay.county.orders import matching
from relay.county.studies.identity import usable
from relay.dicom.orders import Order, OrderStatus

SYNC_PAST = timedelta(days=7)
"""Orders scheduled this long ago are still sent to the edge (an exam done a few days late)."""
SYNC_FUTURE = timedelta(days=30)


class UpsertOutcome(enum.StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    UPDATED = "updated"
    CANCELLED = "cancelled"


class OrderError(ValueError):
    """The order cannot be taken as sent; ``field`` names what is wrong (for an HL7 ERR
    segment, an OperationOutcome, a problem document)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class UpsertResult:
    outcome: UpsertOutcome
    row: OrderRow


_FIELDS = ("accession_number", "patient_id", "patient_id_issuer", "patient_name", "patient_name_pinyin",
           "patient_sex", "patient_birth_date", "patient_phone", "modality", "procedure_code",
           "procedure_description", "clinical_diagnosis", "exam_purpose", "history_summary",
           "ordering_department", "ordering_doctor", "priority", "scheduled_station_ae",
           "requested_procedure_id", "scheduled_step_id", "study_instance_uid", "status", "source")


def parse_scheduled(value: str) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise OrderError(f"scheduled_at {value!r} is not ISO 8601", field="scheduled_at") from exc
    if at.tzinfo is None:
        raise OrderError("scheduled_at has no UTC offset", field="scheduled_at")
    return at


def _site(session: Session, name: str) -> Site:
    site = session.execute(select(Site).where(Site.name == name)).scalar_one_or_none()
    if site is None or site.revoked_at is not None:
        raise OrderError(f"no township site named {name!r}", field="site")
    return site


def order_patient(session: Session, order: Order) -> int | None:
    """The ``patients`` row of the order's patient (made if new), or None without a usable ID.
    The HIS is the source of demographics: a known row takes the order's name, sex, birth date."""
    pid, issuer = usable(order.patient_id), usable(order.patient_id_issuer)
    if pid is None or issuer is None:
        return None
    values = {"patient_id": pid, "issuer": issuer, "name": order.patient_name,
              "birth_date": order.patient_birth_date, "sex": order.patient_sex}
    pk, inserted = insert_ignore(session, Patient, values, keys=["patient_id", "issuer"])
    if not inserted:
        row = session.get(Patient, pk)
        assert row is not None
        if row.merged_into_pk is not None:
            return row.merged_into_pk
        for name in ("name", "birth_date", "sex"):
            if values[name]:
                setattr(row, name, values[name])
    return pk


def _values(order: Order) -> dict[str, object]:
    try:
        order.check()
    except ValueError as exc:
        message = str(exc)
        raise OrderError(message, field=message.split(" ", 1)[0]) from exc
    values: dict[str, object] = {name: getattr(order, name) for name in _FIELDS}
    values["scheduled_at"] = parse_scheduled(order.scheduled_at)
    values["extra_json"] = json.dumps(order.extra, ensure_ascii=False, sort_keys=True)
    return values


def upsert_order(session: Session, order: Order, *, zone: ZoneInfo | None = None) -> UpsertResult:
    """Store ``order`` (see the module docstring); the caller commits and audits."""
    site = _site(session, order.site)
    values = _values(order)
    values["site_id"] = site.id
    matching.lock_site(session, site.id)  # before any order or study row (lock order)
    result = _store(session, order, values)
    matching.after_order_change(session, result.row, zone=zone,
                                cancelled_now=result.outcome is UpsertOutcome.CANCELLED)
    return result


def _store(session: Session, order: Order, values: dict[str, object]) -> UpsertResult:
    existing = session.execute(
        select(OrderRow).where(OrderRow.placer_order_number == order.placer_order_number,
                               OrderRow.placer_issuer == order.placer_issuer).with_for_update()
    ).scalar_one_or_none()
    now = now_utc()
    patient_pk = order_patient(session, order)
    if existing is None:
        row = OrderRow(placer_order_number=order.placer_order_number, placer_issuer=order.placer_issuer,
                       patient_pk=patient_pk, revision=1, created_at=now, updated_at=now, **values)
        session.add(row)
        session.flush()
        return UpsertResult(UpsertOutcome.CREATED, row)
    if existing.status == OrderStatus.COMPLETED and values["status"] == OrderStatus.SCHEDULED:
        values["status"] = OrderStatus.COMPLETED.value  # a study is linked: the HIS resending it changes nothing
    changed = {k: v for k, v in values.items() if getattr(existing, k) != v}
    if existing.patient_pk != patient_pk:
        changed["patient_pk"] = patient_pk
    if not changed:
        return UpsertResult(UpsertOutcome.UNCHANGED, existing)
    for key, value in changed.items():
        setattr(existing, key, value)
    existing.revision += 1
    existing.updated_at = now
    session.flush()
    cancelled = changed.get("status") == OrderStatus.CANCELLED.value
    return UpsertResult(UpsertOutcome.CANCELLED if cancelled else UpsertOutcome.UPDATED, existing)


def cancel_order(session: Session, *, placer_order_number: str, placer_issuer: str) -> UpsertResult:
    """Cancel an order; unknown order -> OrderError (an HIS cancelling what never came). A
    study already linked to it stays linked, flagged ``order_cancelled``."""
    site_id = session.execute(select(OrderRow.site_id).where(
        OrderRow.placer_order_number == placer_order_number, OrderRow.placer_issuer == placer_issuer)).scalar()
    if site_id is not None:
        matching.lock_site(session, site_id)
    row = session.execute(
        select(OrderRow).where(OrderRow.placer_order_number == placer_order_number,
                               OrderRow.placer_issuer == placer_issuer).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise OrderError(f"no order {placer_order_number!r} from {placer_issuer!r}", field="placer_order_number")
    if row.status == OrderStatus.CANCELLED.value:
        return UpsertResult(UpsertOutcome.UNCHANGED, row)
    row.status = OrderStatus.CANCELLED.value
    row.revision += 1
    row.updated_at = now_utc()
    session.flush()
    matching.after_order_change(session, row, zone=None, cancelled_now=True)
    return UpsertResult(UpsertOutcome.CANCELLED, row)


def row_to_order(row: OrderRow, site_name: str) -> Order:
    """The wire record of a stored order."""
    values = {name: getattr(row, name) for name in _FIELDS}
    return Order(placer_order_number=row.placer_order_number, placer_issuer=row.placer_issuer,
                 site=site_name, scheduled_at=row.scheduled_at.isoformat() if row.scheduled_at else "",
                 revision=row.revision, extra=json.loads(row.extra_json or "{}"), **values)


def orders_for_site(session: Session, site: Site, *, now: datetime | None = None) -> list[Order]:
    """The site's orders an edge keeps: scheduled in the sync window (or unscheduled and
    changed in it), cancelled and completed ones included so the edge learns of them."""
    now = now or now_utc()
    window = or_(OrderRow.scheduled_at.between(now - SYNC_PAST, now + SYNC_FUTURE),
                 (OrderRow.scheduled_at.is_(None)) & (OrderRow.updated_at >= now - SYNC_PAST))
    rows = session.execute(select(OrderRow).where(OrderRow.site_id == site.id, window)
                           .order_by(OrderRow.id)).scalars()
    return [row_to_order(row, site.name) for row in rows]


def cancelled(session: Session, key: tuple[str, str]) -> bool:
    """Whether the order (placer number, issuer) exists and was cancelled: a new-order or change
    message for it is refused rather than bringing it back (a late retry must not undo a cancel)."""
    status = session.execute(select(OrderRow.status).where(OrderRow.placer_order_number == key[0],
                                                           OrderRow.placer_issuer == key[1])).scalar_one_or_none()
    return status == OrderStatus.CANCELLED.value

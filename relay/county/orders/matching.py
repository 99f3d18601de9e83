"""Which order (申请单) a study was done for, and whose identity the study then shows.

Tried once when a study is first indexed (the worker binds :func:`on_new_study` into the
indexer) and again whenever an order of the site arrives or changes
(:func:`after_order_change`, from relay.county.orders.service). Candidates, first found wins:

1. the site's order with the study's Accession Number (a cancelled one too: linked, flagged);
2. the site's order whose assigned Study Instance UID is the study's (the modality used the MWL's);
3. the site's one not cancelled order for the study's Patient ID (+ issuer when the study names
   one), of a modality in the study, scheduled on the study's date in the county's time zone;
   only when exactly one fits.

The candidate's identity is then checked against the study's own (relay.county.orders.
identity_check). A clean match links the study: it takes the order's patient (``patient_pk``)
and the HIS's name, so the worklist, QIDO-RS and the report show them; the stored DICOM bytes
stay as received, and the order becomes ``completed`` (revision + 1, so every edge drops it
from its worklist). A contradiction is never merged: the candidate is kept as ``conflict``
with the differing fields, the study keeps its DICOM identity and waits on the
administrator's reconciliation list (relay.county.orders.reconcile). A study an administrator
linked or split is never matched automatically again.

Matching of a site is serialised by a transaction-scoped advisory lock (PostgreSQL), taken
before any order or study row: an order committed while its study is being indexed is seen
by one of the two transactions.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Instance, InstanceHeader, Order, Patient, Site, Study
from relay.county.orders.identity_check import DicomIdentity, Flag, OrderIdentity, check
from relay.county.studies import identity as patient_identity
from relay.county.studies import repository as studies
from relay.dicom.header import InstanceIds, InstanceMeta, InvalidInstance
from relay.dicom.json_header import meta_from_json
from relay.dicom.orders import OrderStatus

LOCK_CLASS = 0x4F52
"""First key of the advisory lock that serialises matching per site (second key: site id)."""
LATE_STUDIES_MAX = 200
"""Most unmatched studies one order change looks at (bounded work per HIS message)."""


class MatchKind(enum.StrEnum):
    """``Study.order_match``."""

    NONE = ""
    """No order found (yet): an emergency without an order stays readable."""
    ACCESSION = "accession"
    """Linked by Accession Number."""
    UID = "uid"
    """Linked by the Study Instance UID the order assigned."""
    DEMOGRAPHICS = "demographics"
    """Linked by patient ID + modality + date, the only order that fits."""
    MANUAL = "manual"
    """Linked by an administrator; never re-matched automatically."""
    CONFLICT = "conflict"
    """``order_pk`` is only a candidate whose identity contradicts the study's."""
    SPLIT = "split"
    """An administrator said the study has no order; never re-matched automatically."""


AUTOMATIC = frozenset({MatchKind.ACCESSION, MatchKind.UID, MatchKind.DEMOGRAPHICS})
LINKED = AUTOMATIC | {MatchKind.MANUAL}
DECIDED = frozenset({MatchKind.MANUAL, MatchKind.SPLIT})

NewStudyHook = Callable[[Session, int, InstanceMeta | None], None]


def lock_site(session: Session, site_id: int) -> None:
    """Serialise order matching of one site until the transaction ends (PostgreSQL; SQLite
    has one writer anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": LOCK_CLASS, "b": site_id})


def flags_of(study: Study) -> list[str]:
    return list(json.loads(study.order_conflict)) if study.order_conflict else []


def _set_flags(study: Study, flags: list[str]) -> None:
    study.order_conflict = json.dumps(sorted(set(flags))) if flags else ""


def order_identity(order: Order) -> OrderIdentity:
    return OrderIdentity(patient_id=order.patient_id, issuer=order.patient_id_issuer, name=order.patient_name,
                         pinyin=order.patient_name_pinyin, sex=order.patient_sex,
                         birth_date=order.patient_birth_date)


def local_date(order: Order, zone: ZoneInfo) -> str:
    """The order's day in the county's zone (an unscheduled order: the day it was placed)."""
    at = order.scheduled_at or order.created_at
    return at.astimezone(zone).strftime("%Y%m%d")


def dicom_meta(session: Session, study: Study) -> InstanceMeta | None:
    """The study's identity as its first indexed instance carried it (the kept header)."""
    row = session.execute(
        select(Instance, InstanceHeader.header_json).join(InstanceHeader, InstanceHeader.instance_pk == Instance.id)
        .where(Instance.study_uid == study.study_uid, Instance.indexed_at.is_not(None))
        .order_by(Instance.id).limit(1)).first()
    if row is None:
        return None
    inst, header = row
    ids = InstanceIds(sop_class_uid=inst.sop_class_uid, sop_uid=inst.sop_uid, study_uid=inst.study_uid,
                      series_uid=inst.series_uid, transfer_syntax_uid=inst.transfer_syntax_uid)
    try:
        return meta_from_json(header, ids)
    except InvalidInstance:
        return None


# --- finding the candidate -----------------------------------------------------------------

def _by_accession(session: Session, study: Study) -> tuple[Order, tuple[Flag, ...]] | None:
    if not study.accession_number.strip():
        return None
    found = list(session.execute(select(Order).where(
        Order.site_id == study.site_id, Order.accession_number == study.accession_number.strip())
        .order_by(Order.id)).scalars())
    live = [o for o in found if o.status != OrderStatus.CANCELLED] or found
    if not live:
        return None
    return live[0], ((Flag.AMBIGUOUS,) if len(live) > 1 else ())


def _by_uid(session: Session, study: Study) -> Order | None:
    return session.execute(select(Order).where(Order.site_id == study.site_id,
                                               Order.study_instance_uid == study.study_uid)
                           .order_by(Order.id).limit(1)).scalar_one_or_none()


def _by_demographics(session: Session, study: Study, dicom: DicomIdentity, zone: ZoneInfo) -> Order | None:
    pid = patient_identity.usable(dicom.patient_id)
    if pid is None or not study.study_date:
        return None
    rows = session.execute(select(Order).where(Order.site_id == study.site_id, Order.patient_id == pid,
                                               Order.status != OrderStatus.CANCELLED.value, Order.modality != "")
                           .limit(LATE_STUDIES_MAX)).scalars()
    modalities = {m.upper() for m in study.modalities.split("\\") if m}
    fits = [o for o in rows
            if o.modality.upper() in modalities and local_date(o, zone) == study.study_date
            and (not dicom.issuer or o.patient_id_issuer == dicom.issuer)]
    return fits[0] if len(fits) == 1 else None


def _candidate(session: Session, study: Study, dicom: DicomIdentity,
               zone: ZoneInfo | None) -> tuple[Order, MatchKind, tuple[Flag, ...]] | None:
    by_accession = _by_accession(session, study)
    if by_accession is not None:
        return by_accession[0], MatchKind.ACCESSION, by_accession[1]
    by_uid = _by_uid(session, study)
    if by_uid is not None:
        return by_uid, MatchKind.UID, ()
    by_patient = _by_demographics(session, study, dicom, zone) if zone is not None else None
    return (by_patient, MatchKind.DEMOGRAPHICS, ()) if by_patient is not None else None


# --- deciding --------------------------------------------------------------------------------

def match_study(session: Session, *, study: Study, dicom: DicomIdentity, zone: ZoneInfo | None,
                now: datetime | None = None) -> MatchKind:
    """Find the study's order and link it or mark the conflict; an administrator's decision
    (manual, split) is left alone. Returns the study's ``order_match`` afterwards."""
    if study.order_match in DECIDED:
        return MatchKind(study.order_match)
    found = _candidate(session, study, dicom, zone)
    if found is None:
        return MatchKind(study.order_match)
    order, kind, extra = found
    decide(session, study=study, order=order, kind=kind, dicom=dicom, extra=extra, now=now or now_utc())
    return MatchKind(study.order_match)


def decide(session: Session, *, study: Study, order: Order, kind: MatchKind, dicom: DicomIdentity,
           extra: tuple[Flag, ...] = (), now: datetime) -> None:
    """Check ``order`` against the study's DICOM identity: link it, or keep it as a conflict."""
    verdict = check(dicom, order_identity(order))
    flags = [*verdict.flags, *extra]
    if order.status == OrderStatus.CANCELLED:
        flags.append(Flag.ORDER_CANCELLED)
    if verdict.clean and not extra:
        link(session, study=study, order=order, kind=kind, flags=[str(f) for f in flags], now=now)
        return
    was_linked = study.order_match in LINKED
    previous = session.get(Order, study.order_pk) if was_linked and study.order_pk else None
    study.order_pk, study.order_match = order.id, MatchKind.CONFLICT.value
    _set_flags(study, [str(f) for f in flags])
    if was_linked:
        restore_dicom_identity(session, study)
        if previous is not None:
            reopen_if_unlinked(session, previous, now)


def link(session: Session, *, study: Study, order: Order, kind: MatchKind, flags: list[str], now: datetime) -> None:
    """The study is ``order``'s: it shows the order's patient and the HIS's name (the stored
    DICOM bytes stay as received); a scheduled order is completed."""
    previous = study.order_pk
    study.order_pk, study.order_match = order.id, kind.value
    _set_flags(study, flags)
    if order.patient_pk is not None:
        study.patient_pk = order.patient_pk
    if order.patient_name.strip():
        study.patient_name = order.patient_name[:512]
    study.updated_at = now
    if order.status == OrderStatus.SCHEDULED:
        order.status, order.revision, order.updated_at = OrderStatus.COMPLETED.value, order.revision + 1, now
    if previous is not None and previous != order.id:
        session.flush()
        old = session.get(Order, previous)
        if old is not None:
            reopen_if_unlinked(session, old, now)


def restore_dicom_identity(session: Session, study: Study) -> None:
    """Give the study back the patient and name its own instances carry."""
    meta = dicom_meta(session, study)
    site = session.get(Site, study.site_id)
    assert site is not None
    key = patient_identity.patient_key(patient_id=meta.patient_id if meta else "",
                                       issuer_of_patient_id=meta.issuer_of_patient_id if meta else "",
                                       site_name=site.name, study_uid=study.study_uid)
    name = (meta.patient_name if meta else "")[:512]
    values: dict[str, object] = {"patient_id": key.patient_id, "issuer": key.issuer, "name": name,
                                 "birth_date": (meta.patient_birth_date if meta else "")[:8],
                                 "sex": (meta.patient_sex if meta else "")[:16]}
    study.patient_pk = studies.upsert_patient(session, values)
    study.patient_name = name


def reopen_if_unlinked(session: Session, order: Order, now: datetime) -> None:
    """A completed order that no study is linked to any more goes back on the worklist."""
    session.flush()
    linked = session.execute(select(func.count()).select_from(Study).where(
        Study.order_pk == order.id, Study.order_match.in_([k.value for k in LINKED]))).scalar_one()
    if not linked and order.status == OrderStatus.COMPLETED:
        order.status, order.revision, order.updated_at = OrderStatus.SCHEDULED.value, order.revision + 1, now


# --- the two ways in -------------------------------------------------------------------------

def on_new_study(zone: ZoneInfo) -> NewStudyHook:
    """The indexer's hook: match a study when its first instance is indexed (same transaction)."""
    def hook(session: Session, study_pk: int, meta: InstanceMeta | None) -> None:
        study = session.get(Study, study_pk, populate_existing=True)
        if study is None or study.order_match:
            return
        lock_site(session, study.site_id)
        match_study(session, study=study, dicom=DicomIdentity.of(meta), zone=zone)
    return hook


def after_order_change(session: Session, order: Order, *, zone: ZoneInfo | None, cancelled_now: bool = False) -> None:
    """An order arrived or changed: re-check the studies linked to it, and try the site's
    unmatched studies it may be for. The caller holds :func:`lock_site` for the order's site."""
    now = now_utc()
    session.flush()
    for study in _studies_of(session, order):
        kind = MatchKind(study.order_match)
        if kind is MatchKind.MANUAL:
            if cancelled_now:
                _set_flags(study, [*flags_of(study), Flag.ORDER_CANCELLED.value])
            continue
        auto = kind if kind in AUTOMATIC else _kind_for(study, order)
        decide(session, study=study, order=order, kind=auto, dicom=DicomIdentity.of(dicom_meta(session, study)), now=now)
    for study in _unmatched_for(session, order, zone):
        match_study(session, study=study, dicom=DicomIdentity.of(dicom_meta(session, study)), zone=zone, now=now)


def _kind_for(study: Study, order: Order) -> MatchKind:
    """How a conflict candidate would be linked if its identity now agrees."""
    if study.accession_number.strip() and study.accession_number.strip() == order.accession_number:
        return MatchKind.ACCESSION
    return MatchKind.UID if order.study_instance_uid == study.study_uid else MatchKind.DEMOGRAPHICS


def _studies_of(session: Session, order: Order) -> list[Study]:
    kinds = [k.value for k in (*LINKED, MatchKind.CONFLICT)]
    return list(session.execute(select(Study).where(Study.order_pk == order.id, Study.order_match.in_(kinds))
                                .order_by(Study.id).with_for_update()).scalars())


def _unmatched_for(session: Session, order: Order, zone: ZoneInfo | None) -> list[Study]:
    ways = []
    if order.accession_number.strip():
        ways.append(Study.accession_number == order.accession_number)
    if order.study_instance_uid:
        ways.append(Study.study_uid == order.study_instance_uid)
    pid = patient_identity.usable(order.patient_id)
    if pid is not None and zone is not None and order.status != OrderStatus.CANCELLED:
        same_id = select(Patient.id).where(Patient.patient_id == pid)
        ways.append(Study.patient_pk.in_(same_id) & (Study.study_date == local_date(order, zone)))
    if not ways:
        return []
    return list(session.execute(select(Study).where(Study.site_id == order.site_id,
                                                    Study.order_match == MatchKind.NONE.value, or_(*ways))
                                .order_by(Study.id).limit(LATE_STUDIES_MAX).with_for_update()).scalars())


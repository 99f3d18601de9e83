"""The HIS's patient changes (HL7 ADT^A08 update, ADT^A40 merge) applied to the county's rows.

The HIS owns demographics: an update replaces the patient's name, sex and birth date and
those of the patient's orders still on a worklist (revision + 1, so each edge resyncs). A
merge points the prior patient's row at the surviving one and moves its orders and studies
there; it is done only on two usable, different IDs (never on a name), and the prior row
stays for the trail. The caller owns the transaction and the audit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Order as OrderRow
from relay.county.db.models import Patient, Study
from relay.county.db.upsert import insert_ignore
from relay.county.orders.service import OrderError
from relay.county.studies.identity import usable
from relay.dicom.orders import OrderStatus

MERGE_HOPS = 16
"""Longest chain of earlier merges followed to the patient that survives them all."""


@dataclass(frozen=True, slots=True)
class Demographics:
    patient_id: str
    issuer: str
    name: str = ""
    name_pinyin: str = ""
    sex: str = ""
    birth_date: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class PatientChange:
    patient_pk: int
    changed: bool
    orders: int = 0
    """Orders whose patient fields (update) or patient (merge) changed."""
    studies: int = 0
    prior_pk: int | None = None


def _key(patient_id: str, issuer: str, *, field: str) -> tuple[str, str]:
    pid, iss = usable(patient_id), usable(issuer)
    if pid is None or iss is None:
        raise OrderError(f"{field} is not a usable patient ID with an issuer", field=field)
    return pid, iss


def _row(session: Session, patient_id: str, issuer: str, demographics: Demographics | None = None
         ) -> tuple[Patient, bool]:
    values = {"patient_id": patient_id, "issuer": issuer, "name": "", "birth_date": "", "sex": ""}
    if demographics is not None:
        values.update(name=demographics.name, birth_date=demographics.birth_date, sex=demographics.sex)
    pk, inserted = insert_ignore(session, Patient, values, keys=["patient_id", "issuer"])
    row = session.get(Patient, pk, with_for_update=True)
    assert row is not None
    return row, inserted


def _surviving(session: Session, row: Patient) -> Patient:
    for _ in range(MERGE_HOPS):
        if row.merged_into_pk is None:
            return row
        nxt = session.get(Patient, row.merged_into_pk)
        assert nxt is not None
        row = nxt
    raise OrderError("the patient's merges form a chain too long to follow", field="patient_id")


def update_patient(session: Session, d: Demographics) -> PatientChange:
    """ADT^A08: the patient's demographics (made if new) and its scheduled orders'."""
    pid, issuer = _key(d.patient_id, d.issuer, field="patient_id")
    found, changed = _row(session, pid, issuer, d)
    row = _surviving(session, found)
    for name, value in (("name", d.name), ("sex", d.sex), ("birth_date", d.birth_date)):
        if value and getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    wanted = {"patient_name": d.name, "patient_name_pinyin": d.name_pinyin, "patient_sex": d.sex,
              "patient_birth_date": d.birth_date, "patient_phone": d.phone}
    wanted = {k: v for k, v in wanted.items() if v}
    orders = session.execute(select(OrderRow).where(OrderRow.patient_pk == row.id,
                                                    OrderRow.status == OrderStatus.SCHEDULED.value)
                             .with_for_update()).scalars().all()
    touched = 0
    now = now_utc()
    for order in orders:
        diff = {k: v for k, v in wanted.items() if getattr(order, k) != v}
        if diff:
            for k, v in diff.items():
                setattr(order, k, v)
            order.revision += 1
            order.updated_at = now
            touched += 1
    session.flush()
    return PatientChange(patient_pk=row.id, changed=changed or touched > 0, orders=touched)


def merge_patients(session: Session, *, surviving: Demographics, prior_id: str, prior_issuer: str) -> PatientChange:
    """ADT^A40: the prior patient (PID-3 of MRG-1) into the surviving one (PID-3)."""
    sid, siss = _key(surviving.patient_id, surviving.issuer, field="patient_id")
    pid, piss = _key(prior_id, prior_issuer, field="prior_patient_id")
    if (sid, siss) == (pid, piss):
        raise OrderError("the prior and the surviving patient are the same", field="prior_patient_id")
    target = _surviving(session, _row(session, sid, siss, surviving)[0])
    prior = _row(session, pid, piss)[0]
    if prior.id == target.id:
        raise OrderError("the surviving patient was merged into the prior one before", field="prior_patient_id")
    if prior.merged_into_pk is not None:
        if _surviving(session, prior).id == target.id:
            return PatientChange(patient_pk=target.id, changed=False, prior_pk=prior.id)  # merged already
        raise OrderError("the prior patient was merged into another patient before", field="prior_patient_id")
    prior.merged_into_pk = target.id
    # earlier merges into the prior patient now end at the surviving one
    session.execute(update(Patient).where(Patient.merged_into_pk == prior.id, Patient.id != target.id)
                    .values(merged_into_pk=target.id))
    now = now_utc()
    orders = session.execute(select(OrderRow).where(OrderRow.patient_pk == prior.id).with_for_update()).scalars().all()
    for order in orders:
        order.patient_pk = target.id
        order.patient_id, order.patient_id_issuer = target.patient_id, target.issuer
        order.revision += 1
        order.updated_at = now
    moved = session.execute(update(Study).where(Study.patient_pk == prior.id).values(patient_pk=target.id))
    session.flush()
    return PatientChange(patient_pk=target.id, changed=True, orders=len(orders),
                         studies=int(getattr(moved, "rowcount", 0) or 0), prior_pk=prior.id)

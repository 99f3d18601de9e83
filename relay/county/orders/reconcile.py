"""The administrator's reconciliation (身份核对): studies whose identity and order disagree.

On the list: every study in ``conflict`` with its candidate order, and every study linked
automatically that carries a note (``name_unverified``, ``order_cancelled``). Decisions:

- link: the study is the named order's (by default its candidate): it takes the order's
  patient and name, like a clean match, ``order_match = manual``, the notes are cleared;
- correct: the same as link to the candidate, after the administrator checked the patient
  (the DICOM identity was wrong, e.g. a typo at the modality); the stored bytes never change;
- split: the study has no order: it keeps (or gets back) its DICOM identity,
  ``order_match = split``, and is never matched automatically again.

Each decision returns a before/after of identifiers (order id, match, patient row id,
fields) for the audit trail; names and patient IDs stay out of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Order, Site, Study
from relay.county.errors import Conflict, NotFound
from relay.county.orders import matching
from relay.county.orders.identity_check import DicomIdentity
from relay.county.orders.matching import MatchKind

LIST_MAX = 500


@dataclass(frozen=True, slots=True)
class Identity:
    patient_id: str = ""
    issuer: str = ""
    name: str = ""
    pinyin: str = ""
    sex: str = ""
    birth_date: str = ""


@dataclass(frozen=True, slots=True)
class OrderSummary:
    id: int
    placer_order_number: str
    placer_issuer: str
    accession_number: str
    status: str
    modality: str
    procedure_description: str
    scheduled_at: str
    identity: Identity


@dataclass(frozen=True, slots=True)
class Item:
    study_instance_uid: str
    site: str
    study_date: str
    modalities: str
    accession_number: str
    state: str
    order_match: str
    fields: list[str]
    dicom: Identity
    """The patient as the study's own instances name them."""
    order: OrderSummary | None


@dataclass(frozen=True, slots=True)
class Change:
    study_uid: str
    before: dict[str, Any]
    after: dict[str, Any] = field(default_factory=dict)

    def detail(self) -> str:
        """The audit detail: identifiers only."""
        return json.dumps({"before": self.before, "after": self.after}, sort_keys=True, separators=(",", ":"))


def _summary(order: Order) -> OrderSummary:
    return OrderSummary(
        id=order.id, placer_order_number=order.placer_order_number, placer_issuer=order.placer_issuer,
        accession_number=order.accession_number, status=order.status, modality=order.modality,
        procedure_description=order.procedure_description,
        scheduled_at=order.scheduled_at.isoformat() if order.scheduled_at else "",
        identity=Identity(patient_id=order.patient_id, issuer=order.patient_id_issuer, name=order.patient_name,
                          pinyin=order.patient_name_pinyin, sex=order.patient_sex,
                          birth_date=order.patient_birth_date))


def _dicom(session: Session, study: Study) -> Identity:
    d = DicomIdentity.of(matching.dicom_meta(session, study))
    return Identity(patient_id=d.patient_id, issuer=d.issuer, name=d.name, sex=d.sex, birth_date=d.birth_date)


def waiting(session: Session, *, site_id: int | None = None, limit: int = LIST_MAX) -> list[Item]:
    """The studies waiting for an administrator, oldest first."""
    noted = (Study.order_conflict != "") & Study.order_match.in_([k.value for k in matching.AUTOMATIC])
    stmt = (select(Study, Site.name, Order).join(Site, Site.id == Study.site_id)
            .outerjoin(Order, Order.id == Study.order_pk)
            .where((Study.order_match == MatchKind.CONFLICT.value) | noted).order_by(Study.id).limit(limit))
    if site_id is not None:
        stmt = stmt.where(Study.site_id == site_id)
    return [Item(study_instance_uid=study.study_uid, site=site, study_date=study.study_date,
                 modalities=study.modalities, accession_number=study.accession_number, state=study.state,
                 order_match=study.order_match, fields=matching.flags_of(study), dicom=_dicom(session, study),
                 order=_summary(order) if order is not None else None)
            for study, site, order in session.execute(stmt).all()]


def _study(session: Session, study_uid: str) -> Study:
    site_id = session.execute(select(Study.site_id).where(Study.study_uid == study_uid)).scalar()
    if site_id is None:
        raise NotFound(f"no study {study_uid}")
    matching.lock_site(session, site_id)
    study = session.execute(select(Study).where(Study.study_uid == study_uid).with_for_update()).scalar_one()
    return study


def _state(study: Study) -> dict[str, Any]:
    return {"order_id": study.order_pk, "order_match": study.order_match, "patient_pk": study.patient_pk,
            "fields": matching.flags_of(study)}


def link(session: Session, *, study_uid: str, order_id: int | None = None) -> Change:
    """Link the study to ``order_id`` (default: its candidate) with the order's identity."""
    study = _study(session, study_uid)
    before = _state(study)
    chosen = order_id if order_id is not None else study.order_pk
    if chosen is None:
        raise Conflict("the study has no candidate order: name the order to link it to")
    order = session.execute(select(Order).where(Order.id == chosen).with_for_update()).scalar_one_or_none()
    if order is None or order.site_id != study.site_id:
        raise NotFound(f"no order {chosen} of the study's township")
    matching.link(session, study=study, order=order, kind=MatchKind.MANUAL, flags=[], now=now_utc())
    session.flush()
    return Change(study_uid, before, _state(study))


def correct(session: Session, *, study_uid: str) -> Change:
    """Take the candidate order's identity for a study in conflict (the administrator
    checked the patient): a link to the candidate."""
    study = _study(session, study_uid)
    if study.order_match != MatchKind.CONFLICT or study.order_pk is None:
        raise Conflict("only a study in conflict with a candidate order is corrected; use link")
    return link(session, study_uid=study_uid)


def split(session: Session, *, study_uid: str) -> Change:
    """The study has no order: its DICOM identity, never matched automatically again."""
    study = _study(session, study_uid)
    before = _state(study)
    previous = session.get(Order, study.order_pk) if study.order_pk is not None else None
    was_linked = study.order_match in matching.LINKED
    study.order_pk, study.order_match, study.order_conflict = None, MatchKind.SPLIT.value, ""
    now = now_utc()
    study.updated_at = now
    if was_linked:
        matching.restore_dicom_identity(session, study)
    if previous is not None:
        matching.reopen_if_unlinked(session, previous, now)
    session.flush()
    return Change(study_uid, before, _state(study))


def as_dict(item: Item) -> dict[str, Any]:
    return asdict(item)

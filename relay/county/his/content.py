"""What a signed report tells the HIS, read once from the index and the store as plain values.

The text is the signed document's (exactly what the reader signed), the PDF the printable
rendering the township gets. The patient is the order's when the study is linked to one
(the HIS's own ID and demographics), otherwise the study's own; an order the matching put
on the reconciliation list (``order_match`` conflict or split) is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.db.models import Order, Patient, Report, ReportDelivery, Site, Study
from relay.county.storage import ObjectStore
from relay.county.studies.identity import shown_issuer
from relay.dicom.orders import OrderStatus
from relay.dicom.vocab import ReportKind

UNUSABLE_MATCHES = ("conflict", "split")
"""Study.order_match values whose order_pk must not be trusted for the patient's identity."""


class NotReady(LookupError):
    """The report, its study or its PDF is not there (yet): the message waits."""


@dataclass(frozen=True, slots=True)
class HisPatient:
    patient_id: str
    issuer: str
    name: str
    """Chinese (or the only) name as a DICOM PN: 王^小明."""
    pinyin: str
    """Alphabetic name as a DICOM PN (Wang^Xiaoming), "" if unknown."""
    sex: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class HisOrder:
    placer_number: str
    placer_issuer: str
    procedure_code: str
    procedure_description: str
    cancelled: bool


@dataclass(frozen=True, slots=True)
class OutgoingReport:
    """One signed revision on its way to the HIS."""

    report_id: int
    revision: int
    addendum: bool
    critical: bool
    findings: str
    impression: str
    advice: str
    signed_at: datetime
    signer_login: str
    signer_name: str
    study_uid: str
    study_date: str
    study_time: str
    modality: str
    description: str
    accession: str
    site_name: str
    site_display: str
    patient: HisPatient
    order: HisOrder | None
    pdf: bytes

    @property
    def filler_number(self) -> str:
        """ORC-3 / OBR-3: the accession number when there is one, else the Study Instance UID."""
        return self.accession or self.study_uid


def linked_order(session: Session, study: Study) -> Order | None:
    """The order the study was done for, if the link can be trusted."""
    if study.order_pk is None or study.order_match in UNUSABLE_MATCHES:
        return None
    return session.get(Order, study.order_pk)


def _split_pn(pn: str) -> tuple[str, str]:
    """A DICOM PN 'Li^Na=李^娜' -> ('李^娜', 'Li^Na'); '王^小明' -> ('王^小明', '')."""
    groups = pn.split("=")
    ideographic = groups[1] if len(groups) > 1 and groups[1].strip("^ ") else ""
    return (ideographic, groups[0]) if ideographic else (groups[0], "")


def _patient(session: Session, study: Study, order: Order | None) -> HisPatient:
    if order is not None and order.patient_id:
        return HisPatient(order.patient_id, order.patient_id_issuer, order.patient_name,
                          order.patient_name_pinyin, order.patient_sex, order.patient_birth_date)
    row = session.get(Patient, study.patient_pk)
    name, pinyin = _split_pn(study.patient_name or (row.name if row else ""))
    # A scope the county made up (site:..., study:...) is no issuer the HIS knows: sent as none.
    return HisPatient(row.patient_id if row else "", shown_issuer(row.issuer) if row else "", name, pinyin,
                      row.sex if row else "", row.birth_date if row else "")


def _order(order: Order | None) -> HisOrder | None:
    if order is None:
        return None
    return HisOrder(order.placer_order_number, order.placer_issuer, order.procedure_code,
                    order.procedure_description, order.status == OrderStatus.CANCELLED.value)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def load(*, session: Session, store: ObjectStore, report_pk: int) -> OutgoingReport:
    """The report as the HIS gets it; NotReady when something it needs is missing."""
    report = session.get(Report, report_pk)
    study = session.get(Study, report.study_pk) if report is not None else None
    delivery = session.execute(select(ReportDelivery).where(ReportDelivery.report_pk == report_pk)).scalar_one_or_none()
    if report is None or study is None or delivery is None or not report.document_json:
        raise NotReady(f"report {report_pk} is not signed or has no delivery")
    key = json.loads(delivery.object_keys_json).get("pdf")
    if not key:
        raise NotReady(f"report {report_pk} has no PDF yet")
    document = json.loads(report.document_json)
    site = session.get(Site, study.site_id)
    order = linked_order(session, study)
    return OutgoingReport(
        report_id=report.id, revision=report.revision, addendum=report.kind == ReportKind.ADDENDUM,
        critical=bool(document.get("critical")), findings=str(document.get("findings", "")),
        impression=str(document.get("impression", "")), advice=str(document.get("advice", "")),
        signed_at=_aware(datetime.fromisoformat(str(document["signed_at"]))),
        signer_login=str(document.get("reader", "")), signer_name=str(document.get("reader_name") or ""),
        study_uid=study.study_uid, study_date=study.study_date, study_time=study.study_time,
        modality=study.modalities.split("\\")[0], description=study.description,
        accession=(order.accession_number if order is not None else "") or study.accession_number,
        site_name=site.name if site else "", site_display=(site.display_name or site.name) if site else "",
        patient=_patient(session, study, order), order=_order(order), pdf=store.get(key))

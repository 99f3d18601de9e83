"""An exam order (申请单) as every part of the relay sees it: one record, three ways in.

The county takes orders from the HIS (HL7 v2 over MLLP, FHIR R4 ``ServiceRequest``) and
from the township's registration page (登记); all three become this record, stored at the
county (``relay.county.orders``) and synced to the township's edge, which answers the
modality's worklist query (MWL C-FIND) from its own copy, also while the WAN is down.

An order is idempotent on ``(placer_order_number, placer_issuer)``: the same order sent
again changes nothing; a changed order replaces the fields and bumps ``revision``; a
cancelled one keeps its row with ``status = cancelled`` so every copy learns of it.

Wire form between county and edge (JSON, UTF-8)::

    GET {county}/api/edges/orders         site credential; If-None-Match: <etag>
    -> 200 {"orders": [<order>...], "etag": "..."}  (the site's orders of the sync window,
       cancelled ones included, so an edge drops them) | 304
    POST {county}/api/edges/orders         site credential; body <order> made at the
       township's registration page -> 200 {"outcome": "created"|"unchanged"|"updated",
       "order": <order>}  (idempotent on placer number + issuer)

Names are DICOM PN strings (``王^小明``); ``patient_name_pinyin`` is the alphabetic form
(``Wang^Xiaoming``) when the HIS sent one. Dates are ``YYYYMMDD``; ``scheduled_at`` is
ISO 8601 with its offset.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

ORDERS_PATH = "/api/edges/orders"


class OrderStatus(enum.StrEnum):
    """Where an order stands (HL7 ORC-5 / FHIR ServiceRequest.status, simplified)."""

    SCHEDULED = "scheduled"
    """Placed, the exam not yet done: on the worklist (HL7 SC/IP; FHIR active)."""
    COMPLETED = "completed"
    """A study was matched to it (HL7 CM; FHIR completed); off the worklist."""
    CANCELLED = "cancelled"
    """Withdrawn by the HIS (HL7 CA/DC; FHIR revoked/entered-in-error); off the worklist."""


class OrderSource(enum.StrEnum):
    """How the order entered the relay."""

    HL7 = "hl7"
    """HL7 v2 ORM^O01 / OMI^O23 over MLLP."""
    FHIR = "fhir"
    """FHIR R4 ServiceRequest (+ Patient) over REST."""
    REGISTRATION = "registration"
    """The township's registration page (登记), for hospitals without an HIS interface."""


@dataclass(slots=True)
class Order:
    """One order. Field names are the wire names (``to_wire`` / ``from_wire``)."""

    placer_order_number: str
    """The HIS's order number (ORC-2 / OBR-2; FHIR ServiceRequest.identifier PLAC)."""
    placer_issuer: str
    """Namespace of the placer number (ORC-2.2 / MSH-4 sending facility; FHIR identifier.system;
    ``site:NAME`` for the registration page)."""
    accession_number: str
    """The Accession Number (0008,0050) the modality is to put in the study (OBR-18 / IPC-1)."""
    site: str
    """The township that does the exam (a site name; HL7 PV1-3.4 or OBR-? location)."""
    patient_id: str
    patient_id_issuer: str
    """Issuer of Patient ID (PID-3.4 assigning authority; FHIR identifier.system)."""
    patient_name: str
    """The HIS's name as a DICOM PN (Chinese characters as the HIS wrote them)."""
    patient_name_pinyin: str = ""
    patient_sex: str = ""
    """M, F, O or "" (PID-8 mapped; FHIR gender)."""
    patient_birth_date: str = ""
    patient_phone: str = ""
    modality: str = ""
    """The DICOM modality code the exam is for (OBR-24 / IPC-5)."""
    procedure_code: str = ""
    procedure_description: str = ""
    """Requested procedure (OBR-4 / FHIR ServiceRequest.code)."""
    clinical_diagnosis: str = ""
    """临床诊断 (DG1-3 / OBR-31 / FHIR reasonCode)."""
    exam_purpose: str = ""
    """检查目的 (OBR-13 relevant clinical info / FHIR ServiceRequest.note "purpose")."""
    history_summary: str = ""
    """病史摘要 (NTE after OBR / FHIR supportingInfo or note "history")."""
    ordering_department: str = ""
    ordering_doctor: str = ""
    """ORC-12 / OBR-16 ordering provider (name); FHIR requester.display."""
    priority: str = "routine"
    """A :class:`relay.dicom.vocab.Priority` value (ORC-7.6 / OBR-27.6 S→stat, A→urgent)."""
    scheduled_at: str = ""
    """When the exam is scheduled (ISO 8601 with offset; "" = today, whenever)."""
    scheduled_station_ae: str = ""
    """AE title of the modality that is to do it, when the HIS says (else any)."""
    requested_procedure_id: str = ""
    scheduled_step_id: str = ""
    study_instance_uid: str = ""
    """The Study Instance UID assigned for the exam (MWL returns it; the modality may use it)."""
    status: str = OrderStatus.SCHEDULED.value
    source: str = OrderSource.HL7.value
    revision: int = 1
    """Bumped on each change at the county; an edge keeps the highest it saw."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Order":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown order fields: {sorted(unknown)}")
        missing = [n for n in ("placer_order_number", "placer_issuer", "accession_number", "site",
                               "patient_id", "patient_id_issuer", "patient_name") if n not in data]
        if missing:
            raise ValueError(f"missing order fields: {missing}")
        order = cls(**data)
        order.check()
        return order

    def check(self) -> None:
        """Refuse what would make the order ambiguous (ValueError naming the field)."""
        for name in ("placer_order_number", "placer_issuer", "accession_number", "site"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} is empty")
        if len(self.accession_number) > 16:
            raise ValueError("accession_number is longer than 16 characters (SH)")
        if self.status not in {s.value for s in OrderStatus}:
            raise ValueError(f"status {self.status!r} is not one of {[s.value for s in OrderStatus]}")
        if self.patient_sex not in ("", "M", "F", "O"):
            raise ValueError(f"patient_sex {self.patient_sex!r} is not M, F, O or empty")
        for name in ("patient_birth_date",):
            value = getattr(self, name)
            if value and (len(value) != 8 or not value.isdigit()):
                raise ValueError(f"{name} {value!r} is not YYYYMMDD")

    @property
    def key(self) -> tuple[str, str]:
        return (self.placer_order_number, self.placer_issuer)

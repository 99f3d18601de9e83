"""FHIR R4 in from the HIS: a ServiceRequest (+ its Patient) <-> an order, and OperationOutcomes.

Pure: validation with ``fhir.resources.R4B`` (structure), then the mapping checks what an
order needs (a PLAC identifier with a system, an accession, a performing township, known
codes) and names the FHIR path of what is wrong. Every path read is listed in
docs/interfaces/fhir-in.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from relay.dicom.orders import Order, OrderSource, OrderStatus
from relay.dicom.vocab import Priority

FHIR_JSON = "application/fhir+json"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EN_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
NOTE_KIND = "urn:relay:fhir:note-kind"
"""Extension on ServiceRequest.note (valueCode ``purpose`` 检查目的 | ``history`` 病史摘要)."""
ORDERING_DEPARTMENT = "urn:relay:fhir:ordering-department"
"""Extension on ServiceRequest (valueString): the ordering department (开单科室)."""
STUDY_UID_SYSTEM = "urn:dicom:uid"
"""ServiceRequest.identifier system of the Study Instance UID (IHE), value ``urn:oid:<uid>``."""
CANCEL_STATUSES = {"revoked", "entered-in-error"}
_PRIORITY = {"routine": Priority.ROUTINE, "urgent": Priority.URGENT, "asap": Priority.URGENT, "stat": Priority.STAT}
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": ""}
_STATUS_OUT = {OrderStatus.SCHEDULED.value: "active", OrderStatus.COMPLETED.value: "completed",
               OrderStatus.CANCELLED.value: "revoked"}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")


@dataclass(frozen=True, slots=True)
class Issue:
    expression: str
    diagnostics: str
    code: str = "invalid"
    severity: str = "error"


class FhirProblem(Exception):
    """Answered as an OperationOutcome with ``status``."""

    def __init__(self, status: int, *issues: Issue) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.status, self.issues = status, list(issues)


def invalid(expression: str, diagnostics: str, *, code: str = "invalid") -> FhirProblem:
    return FhirProblem(422, Issue(expression, diagnostics, code))


def outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics,
                       **({"expression": [i.expression]} if i.expression else {})} for i in issues]}


def _path(root: str, loc: tuple[Any, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and "[" not in str(part):
            out += f".{part}"
    return out


def validate(model: type[pydantic.BaseModel], body: Any, root: str) -> Any:
    """``body`` as an R4B model; a validation error is a 422 naming each path."""
    if not isinstance(body, dict) or body.get("resourceType") != root:
        raise invalid(root, f"the body is not a {root} resource", code="structure")
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise FhirProblem(422, *(Issue(_path(root, tuple(e["loc"])), str(e["msg"]), "structure")
                                 for e in exc.errors()[:20])) from exc


@dataclass(slots=True)
class Mapped:
    order: Order
    site_path: str
    """Where the performing township came from (for the 422 of an unknown one)."""
    cancel: bool = False
    paths: dict[str, str] = field(default_factory=dict)


def _codings(concept: Any) -> list[Any]:
    return list(getattr(concept, "coding", None) or []) if concept is not None else []


def _pn(name: Any) -> str:
    family = (name.family or "").strip()
    given = " ".join(g.strip() for g in (name.given or []) if g and g.strip())
    if family or given:
        return f"{family}^{given}".rstrip("^")
    return (name.text or "").strip()


def _names(patient: Patient) -> tuple[str, str]:
    ideographic = alphabetic = ""
    for name in patient.name or []:
        text = _pn(name)
        if not text:
            continue
        kind = next((e.valueCode for e in (name.extension or []) if e.url == EN_REPRESENTATION), None)
        if kind not in ("IDE", "ABC", "SYL"):
            kind = "IDE" if _CJK.search(text) else "ABC"
        if kind == "IDE" and not ideographic:
            ideographic = text
        elif kind == "ABC" and not alphabetic:
            alphabetic = text
    return (ideographic or alphabetic), (alphabetic if ideographic else "")


def _day(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    digits = str(value).replace("-", "")
    return digits if len(digits) == 8 and digits.isdigit() else ""


def _when(value: Any, zone: ZoneInfo) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).isoformat()
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=zone).isoformat()
    text = str(value)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else \
            datetime.combine(date.fromisoformat(text), time(0, 0))
    except ValueError as exc:
        raise invalid("ServiceRequest.occurrenceDateTime", f"{text!r} is not a date/time") from exc
    return (at if at.tzinfo else at.replace(tzinfo=zone)).isoformat()


def _patient_fields(patient: Patient, path: str) -> dict[str, Any]:
    ident = next(((i, n) for n, i in enumerate(patient.identifier or []) if i.system and i.value), None)
    if ident is None:
        raise invalid(f"{path}.identifier", "the Patient has no identifier with a system and a value "
                      "(the patient ID and its issuer)", code="required")
    name, pinyin = _names(patient)
    gender = patient.gender or "unknown"
    if gender not in _GENDER:
        raise invalid(f"{path}.gender", f"gender {gender!r} is not male, female, other or unknown", code="code-invalid")
    phone = next((t.value for t in patient.telecom or [] if t.system == "phone" and t.value), "")
    pid, issuer = str(ident[0].value).strip(), str(ident[0].system).strip()
    if len(pid) > 64 or len(issuer) > 128:
        raise invalid(f"{path}.identifier[{ident[1]}]", "the patient ID (64) or its system (128) is too long")
    return {"patient_id": pid, "patient_id_issuer": issuer,
            "patient_name": name, "patient_name_pinyin": pinyin, "patient_sex": _GENDER[gender],
            "patient_birth_date": _day(patient.birthDate), "patient_phone": str(phone)[:32]}


def _site(sr: ServiceRequest) -> tuple[str, str]:
    """The performing township: the first of performer[].identifier.value,
    locationReference[].identifier.value, performer[].display, locationReference[].display."""
    for attr in ("performer", "locationReference"):
        for n, ref in enumerate(getattr(sr, attr) or []):
            if ref.identifier is not None and ref.identifier.value:
                return ref.identifier.value.strip(), f"ServiceRequest.{attr}[{n}].identifier.value"
    for attr in ("performer", "locationReference"):
        for n, ref in enumerate(getattr(sr, attr) or []):
            if ref.display:
                return ref.display.strip(), f"ServiceRequest.{attr}[{n}].display"
    raise invalid("ServiceRequest.performer", "no performing township (performer or locationReference "
                  "identifier.value or display naming a county site)", code="required")


def _modality(sr: ServiceRequest) -> str:
    for concepts in ([sr.code], sr.category or [], sr.orderDetail or []):
        for concept in concepts:
            for coding in _codings(concept):
                if coding.system == DCM and coding.code:
                    return str(coding.code).upper()[:16]
    return ""


def _notes(sr: ServiceRequest) -> tuple[str, str]:
    purpose = history = ""
    plain = []
    for note in sr.note or []:
        kind = next((e.valueCode for e in (note.extension or []) if e.url == NOTE_KIND), None)
        text = (note.text or "").strip()
        if kind == "purpose" and not purpose:
            purpose = text
        elif kind == "history" and not history:
            history = text
        elif kind is None:
            plain.append(text)
    supporting = "\n".join(r.display.strip() for r in sr.supportingInfo or [] if r.display)
    purpose = purpose or (plain[0] if plain else "")
    history = history or supporting or (plain[1] if len(plain) > 1 else "")
    return purpose, history


def contained_patient(sr: ServiceRequest) -> tuple[Patient, str]:
    """The Patient ``subject`` "#id" points at among ``contained``."""
    ref = (sr.subject.reference or "") if sr.subject is not None else ""
    if not ref.startswith("#"):
        raise invalid("ServiceRequest.subject", "subject must reference the contained Patient (\"#id\")",
                      code="required")
    for n, res in enumerate(sr.contained or []):
        if getattr(res, "id", None) == ref[1:]:
            if not isinstance(res, Patient):
                raise invalid(f"ServiceRequest.contained[{n}]", "the subject is not a Patient")
            return res, f"ServiceRequest.contained[{n}]"
    raise invalid("ServiceRequest.subject", f"no contained resource {ref!r}", code="not-found")


def to_order(sr: ServiceRequest, patient: Patient, *, patient_path: str, zone: ZoneInfo) -> Mapped:
    """The order a ServiceRequest and its Patient describe."""
    placer = accession = study_uid = ""
    issuer = ""
    extra: dict[str, Any] = {}
    for n, ident in enumerate(sr.identifier or []):
        codes = {(c.system, c.code) for c in _codings(ident.type)}
        if (V2_0203, "PLAC") in codes and not placer:
            if not ident.system:
                raise invalid(f"ServiceRequest.identifier[{n}].system", "the PLAC identifier has no system "
                              "(the issuer of the placer order number)", code="required")
            placer, issuer = (ident.value or "").strip(), ident.system.strip()
        elif (V2_0203, "ACSN") in codes and not accession:
            accession = (ident.value or "").strip()
        elif (V2_0203, "FILL") in codes:
            extra["filler_order_number"] = ident.value or ""
        elif ident.system == STUDY_UID_SYSTEM and ident.value:
            study_uid = ident.value.removeprefix("urn:oid:")
    if study_uid and (len(study_uid) > 64 or not re.match(r"^[0-9]+(\.[0-9]+)*$", study_uid)):
        raise invalid("ServiceRequest.identifier", f"the {STUDY_UID_SYSTEM} identifier is not urn:oid:<DICOM UID>")
    if not placer:
        raise invalid("ServiceRequest.identifier", "no identifier of type PLAC (v2-0203) with a value: the "
                      "placer order number", code="required")
    if len(placer) > 64 or len(issuer) > 128:
        raise invalid("ServiceRequest.identifier", "the placer order number (64) or its system (128) is too long")
    status = sr.status
    if status not in ("active", *CANCEL_STATUSES):
        raise invalid("ServiceRequest.status", f"status {status!r} is not taken (active, revoked, entered-in-error)",
                      code="code-invalid")
    cancel = status in CANCEL_STATUSES
    if not accession and not cancel:
        raise invalid("ServiceRequest.identifier", "no identifier of type ACSN (v2-0203): the accession number",
                      code="required")
    if len(accession) > 16:
        raise invalid("ServiceRequest.identifier", "the accession number is longer than 16 characters (DICOM SH)")
    if sr.priority is not None and sr.priority not in _PRIORITY:
        raise invalid("ServiceRequest.priority", f"priority {sr.priority!r} is not routine, urgent, asap or stat",
                      code="code-invalid")
    site, site_path = _site(sr) if not cancel else ("", "ServiceRequest.performer")
    coding = next((c for c in _codings(sr.code) if c.system != DCM), None)
    reason = "；".join(t for t in ((c.text or next((x.display for x in _codings(c) if x.display), "") or "")
                                  for c in sr.reasonCode or []) if t)
    purpose, history = _notes(sr)
    department = next((e.valueString for e in sr.extension or [] if e.url == ORDERING_DEPARTMENT), "") or ""
    patient_fields = _patient_fields(patient, patient_path)
    order = Order(
        placer_order_number=placer, placer_issuer=issuer, accession_number=accession, site=site,
        **patient_fields, modality=_modality(sr),
        procedure_code=(str(coding.code or "") if coding else "")[:64],
        procedure_description=((sr.code.text if sr.code else None) or (coding.display if coding else "") or "")[:256],
        clinical_diagnosis=reason, exam_purpose=purpose, history_summary=history,
        ordering_department=str(department)[:128],
        ordering_doctor=((sr.requester.display if sr.requester else "") or "")[:128],
        priority=_PRIORITY[sr.priority or "routine"].value,
        scheduled_at=_when(sr.occurrenceDateTime, zone), study_instance_uid=study_uid,
        source=OrderSource.FHIR.value, extra=extra)
    return Mapped(order=order, site_path=site_path, cancel=cancel)


def to_resource(order: Order, *, resource_id: str) -> dict[str, Any]:
    """What is stored, as a ServiceRequest with its Patient contained (meta.versionId = revision)."""
    name = []
    for text, rep in ((order.patient_name, "IDE"), (order.patient_name_pinyin, "ABC")):
        if text:
            family, _, given = text.partition("^")
            name.append({"family": family, **({"given": [given.replace("^", " ")]} if given else {}),
                         "extension": [{"url": EN_REPRESENTATION, "valueCode": rep}]})
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "patient",
                               "gender": {v: k for k, v in _GENDER.items()}.get(order.patient_sex, "unknown")}
    if order.patient_id:
        patient["identifier"] = [{"system": order.patient_id_issuer, "value": order.patient_id}]
    if name:
        patient["name"] = name
    if order.patient_birth_date:
        b = order.patient_birth_date
        patient["birthDate"] = f"{b[:4]}-{b[4:6]}-{b[6:]}"
    if order.patient_phone:
        patient["telecom"] = [{"system": "phone", "value": order.patient_phone}]

    def ident(code: str, value: str, system: str | None = None) -> dict[str, Any]:
        return {"type": {"coding": [{"system": V2_0203, "code": code}]}, "value": value,
                **({"system": system} if system else {})}

    identifiers = [ident("PLAC", order.placer_order_number, order.placer_issuer),
                   ident("ACSN", order.accession_number)]
    if order.study_instance_uid:
        identifiers.append({"system": STUDY_UID_SYSTEM, "value": f"urn:oid:{order.study_instance_uid}"})
    codings = []
    if order.procedure_code:
        codings.append({"code": order.procedure_code, **({"display": order.procedure_description}
                                                          if order.procedure_description else {})})
    if order.modality:
        codings.append({"system": DCM, "code": order.modality})
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": resource_id, "meta": {"versionId": str(order.revision)},
        "contained": [patient], "identifier": identifiers, "status": _STATUS_OUT.get(order.status, "active"),
        "intent": "order", "priority": order.priority, "subject": {"reference": "#patient"},
        "performer": [{"identifier": {"value": order.site}, "display": order.site}]}
    if codings or order.procedure_description:
        resource["code"] = {**({"coding": codings} if codings else {}),
                            **({"text": order.procedure_description} if order.procedure_description else {})}
    if order.scheduled_at:
        resource["occurrenceDateTime"] = order.scheduled_at
    if order.ordering_doctor:
        resource["requester"] = {"display": order.ordering_doctor}
    if order.clinical_diagnosis:
        resource["reasonCode"] = [{"text": order.clinical_diagnosis}]
    notes = [{"text": t, "extension": [{"url": NOTE_KIND, "valueCode": k}]}
             for t, k in ((order.exam_purpose, "purpose"), (order.history_summary, "history")) if t]
    if notes:
        resource["note"] = notes
    if order.ordering_department:
        resource["extension"] = [{"url": ORDERING_DEPARTMENT, "valueString": order.ordering_department}]
    ServiceRequest.model_validate(resource)  # what we answer is valid R4 too
    return resource

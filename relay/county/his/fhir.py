"""A signed report as a FHIR R4 DiagnosticReport, validated (fhir.resources R4B) and PUT.

PUT {base}/DiagnosticReport/{id} is idempotent on the id (one resource per signed
revision), so a resend after a lost answer replaces the resource with itself. The paths
written are listed in docs/interfaces/his-out.md.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from relay.county.his.content import OutgoingReport
from relay.county.reports.pdf import display_name

LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CENTRE = "县域医共体远程诊断中心"
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    text: str
    """The OperationOutcome's diagnostics (or the body's start), for the administrator."""


class FhirUnreachable(Exception):
    """No HTTP answer: refused, reset, or silent past the timeout."""


def _effective(report: OutgoingReport, zone: ZoneInfo) -> str | None:
    if len(report.study_date) != 8:
        return None
    digits = "".join(ch for ch in report.study_time.split(".")[0] if ch.isdigit()).ljust(6, "0")[:6]
    try:
        at = datetime.strptime(report.study_date + digits, "%Y%m%d%H%M%S").replace(tzinfo=zone)
    except ValueError:
        return None
    return at.isoformat()


def _findings_text(report: OutgoingReport) -> str:
    parts = [("所见", report.findings), ("印象/诊断", report.impression), ("建议", report.advice)]
    return "\n\n".join(f"{title}：\n{text}" for title, text in parts if text.strip())


def _attachment(content_type: str, data: bytes, title: str) -> dict[str, Any]:
    return {"contentType": content_type, "language": "zh-CN", "title": title,
            "data": base64.b64encode(data).decode("ascii")}


def _subject(report: OutgoingReport) -> dict[str, Any] | None:
    patient = report.patient
    if not patient.patient_id:
        return None
    identifier = {"value": patient.patient_id, **({"system": patient.issuer} if patient.issuer else {})}
    return {"type": "Patient", "identifier": identifier, **({"display": display_name(patient.name)}
                                                          if patient.name else {})}


def build_diagnostic_report(report: OutgoingReport, *, resource_id: str, system: str,
                            zone: ZoneInfo) -> dict[str, Any]:
    """The DiagnosticReport as JSON, validated against the R4 model (ValueError if invalid)."""
    title = "补充报告" if report.addendum else "诊断报告"
    procedure = (report.order.procedure_description if report.order else "") or report.description or report.modality
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": resource_id,
        "identifier": [{"system": system, "value": str(report.report_id)}],
        "status": "amended" if report.addendum else "final",
        "category": [{"coding": [{"system": V2_0074, "code": "RAD"}]}]
        + ([{"coding": [{"system": DCM, "code": report.modality}]}] if report.modality else []),
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
                 **({"text": procedure} if procedure else {})},
        "issued": report.signed_at.isoformat(),
        "performer": [{"display": CENTRE}],
        "resultsInterpreter": [{"display": report.signer_name or report.signer_login}],
        "conclusion": report.impression,
        "presentedForm": [_attachment("application/pdf", report.pdf, title),
                          _attachment("text/plain; charset=utf-8", _findings_text(report).encode(), title)],
    }
    if report.order is not None:
        resource["basedOn"] = [{"type": "ServiceRequest", "identifier": {
            "system": report.order.placer_issuer, "value": report.order.placer_number}}]
    subject = _subject(report)
    if subject:
        resource["subject"] = subject
    effective = _effective(report, zone)
    if effective:
        resource["effectiveDateTime"] = effective
    if report.critical:
        resource["conclusionCode"] = [{"coding": [{"system": INTERPRETATION, "code": "AA",
                                                   "display": "Critical abnormal"}], "text": "危急值"}]
    DiagnosticReport.model_validate(resource)
    return resource


def put_report(base_url: str, resource: dict[str, Any], *, token: str, timeout_s: float) -> HttpAnswer:
    """PUT the resource to its id; the HTTP status, or FhirUnreachable without one."""
    url = f"{base_url.rstrip('/')}/DiagnosticReport/{resource['id']}"
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(resource, ensure_ascii=False).encode("utf-8")
    try:
        response = httpx.put(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise FhirUnreachable(type(exc).__name__) from exc
    return HttpAnswer(response.status_code, _diagnostics(response))


def _diagnostics(response: httpx.Response) -> str:
    if response.is_success:
        return ""
    try:
        issues = response.json().get("issue", [])
        text = "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues)
    except (ValueError, AttributeError):
        text = response.text
    return text[:300]

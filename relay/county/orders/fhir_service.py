"""FHIR orders stored: a mapped ServiceRequest through ``upsert_order`` / ``cancel_order``.

The resource id of a stored order is its ``orders`` row number (stable for the order's
life: a change keeps it, the revision is ``meta.versionId``). One transaction per
ServiceRequest, or per Bundle of type transaction; a refusal rolls it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from sqlalchemy.orm import Session

from relay.county.audit.service import Entry
from relay.county.db.models import Order as OrderRow
from relay.county.db.models import Site
from relay.county.orders import fhir
from relay.county.orders.fhir import FhirProblem, Issue, Mapped
from relay.county.orders.service import (OrderError, UpsertOutcome, cancel_order, cancelled, row_to_order,
                                         upsert_order)
from relay.county.orders.trail import order_entry

ACTOR = "his:fhir"


@dataclass(frozen=True, slots=True)
class Stored:
    outcome: UpsertOutcome
    resource_id: str
    resource: dict[str, Any]
    entry: Entry | None


def _path(exc: OrderError, mapped: Mapped, patient_path: str) -> str:
    return {"site": mapped.site_path, "accession_number": "ServiceRequest.identifier",
            "placer_order_number": "ServiceRequest.identifier", "placer_issuer": "ServiceRequest.identifier",
            "scheduled_at": "ServiceRequest.occurrenceDateTime", "patient_sex": f"{patient_path}.gender",
            "patient_birth_date": f"{patient_path}.birthDate"}.get(exc.field, "ServiceRequest")


def resource_of(session: Session, row: OrderRow) -> dict[str, Any]:
    site = session.get(Site, row.site_id)
    return fhir.to_resource(row_to_order(row, site.name if site else ""), resource_id=str(row.id))


def find(session: Session, resource_id: str) -> OrderRow | None:
    return session.get(OrderRow, int(resource_id)) if resource_id.isdigit() and len(resource_id) < 12 else None


def store(session: Session, mapped: Mapped, *, patient_path: str, expect_id: str | None = None,
          zone: ZoneInfo | None = None) -> Stored:
    """Create, change or cancel the order (flushed, not committed)."""
    order = mapped.order
    if expect_id is not None:
        row = find(session, expect_id)
        if row is None:
            raise FhirProblem(404, Issue("", f"no ServiceRequest/{expect_id}", "not-found"))
        if (row.placer_order_number, row.placer_issuer) != order.key:
            raise fhir.invalid("ServiceRequest.identifier", "the PLAC identifier differs from the stored order's "
                               "(a placer order number cannot change; cancel and place a new order)")
    if not mapped.cancel and cancelled(session, order.key):
        raise fhir.invalid("ServiceRequest.status", "the order was cancelled: place a new order (new PLAC identifier)",
                           code="business-rule")
    try:
        if mapped.cancel:
            result = cancel_order(session, placer_order_number=order.placer_order_number,
                                  placer_issuer=order.placer_issuer)
        else:
            result = upsert_order(session, order, zone=zone)
    except OrderError as exc:
        message = (f"{mapped.order.site!r} names no county township site" if exc.field == "site" else str(exc))
        raise fhir.invalid(_path(exc, mapped, patient_path), message,
                           code="not-found" if exc.field in ("site", "placer_order_number") else "invalid") from exc
    return Stored(outcome=result.outcome, resource_id=str(result.row.id), resource=resource_of(session, result.row),
                  entry=order_entry(result, actor=ACTOR, source="fhir"))


def map_service_request(body: Any, zone: ZoneInfo) -> tuple[Mapped, str]:
    """A POSTed/PUT ServiceRequest with a contained Patient, mapped (422 on anything missing)."""
    sr = fhir.validate(ServiceRequest, body, "ServiceRequest")
    patient, path = fhir.contained_patient(sr)
    return fhir.to_order(sr, patient, patient_path=path, zone=zone), path


def map_bundle_entries(body: Any, zone: ZoneInfo) -> tuple[str, list[tuple[int, Mapped | None, str]]]:
    """(bundle type, [(entry index, mapped ServiceRequest or None for a Patient entry, patient path)])."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise fhir.invalid("Bundle", "the body is not a Bundle", code="structure")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise fhir.invalid("Bundle.type", f"Bundle.type {kind!r} is not transaction or batch", code="code-invalid")
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        raise fhir.invalid("Bundle.entry", "entry is not a list", code="structure")
    patients: dict[str, tuple[Patient, str]] = {}
    for n, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Patient":
            path = f"Bundle.entry[{n}].resource"
            try:
                model = fhir.validate(Patient, res, "Patient")
            except FhirProblem as problem:
                raise FhirProblem(422, *(Issue(i.expression.replace("Patient", path, 1), i.diagnostics, i.code)
                                         for i in problem.issues)) from problem
            patients[str(entry.get("fullUrl") or "")] = (model, path)
    out: list[tuple[int, Mapped | None, str]] = []
    for n, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        kind_n = res.get("resourceType") if isinstance(res, dict) else None
        if kind_n == "Patient":
            out.append((n, None, ""))
            continue
        if kind_n != "ServiceRequest":
            raise fhir.invalid(f"Bundle.entry[{n}].resource", "only Patient and ServiceRequest entries are taken",
                               code="not-supported")
        try:
            sr = fhir.validate(ServiceRequest, res, "ServiceRequest")
        except FhirProblem as problem:
            raise FhirProblem(422, *(Issue(i.expression.replace("ServiceRequest", f"Bundle.entry[{n}].resource", 1),
                                           i.diagnostics, i.code) for i in problem.issues)) from problem
        ref = (sr.subject.reference or "") if sr.subject is not None else ""
        if ref.startswith("#"):
            patient, path = fhir.contained_patient(sr)
            path = path.replace("ServiceRequest", f"Bundle.entry[{n}].resource", 1)
        elif ref in patients and ref:
            patient, path = patients[ref]
        else:
            raise fhir.invalid(f"Bundle.entry[{n}].resource.subject",
                               f"subject {ref!r} is not the fullUrl of a Patient in the Bundle", code="not-found")
        try:
            mapped = fhir.to_order(sr, patient, patient_path=path, zone=zone)
        except FhirProblem as problem:
            raise FhirProblem(422, *(Issue(i.expression.replace("ServiceRequest", f"Bundle.entry[{n}].resource", 1),
                                           i.diagnostics, i.code) for i in problem.issues)) from problem
        mapped.site_path = mapped.site_path.replace("ServiceRequest", f"Bundle.entry[{n}].resource", 1)
        out.append((n, mapped, path))
    if not any(m is not None for _, m, _ in out):
        raise fhir.invalid("Bundle.entry", "the Bundle has no ServiceRequest", code="required")
    return str(kind), out

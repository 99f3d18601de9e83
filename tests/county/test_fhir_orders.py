"""FHIR R4 orders from the HIS through the county app: ServiceRequest with a contained
Patient, transaction and batch Bundles, changes and cancels, 422 OperationOutcomes naming
the path, the token, and logs without patient data (PostgreSQL)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.models import AuditEvent, Order, Patient
from relay.county.orders.fhir import DCM, EN_REPRESENTATION, NOTE_KIND, V2_0203
from tests.factories import make_site

TOKEN = "his-fhir-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
RARE = "龔^𪚥"


def patient(pid: str = "P-1", *, name: tuple[str, str] = ("王", "小明"), pinyin: tuple[str, str] = ("Wang", "Xiaoming"),
            rid: str = "pat") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid,
            "identifier": [{"value": "no-system"}, {"system": "urn:oid:1.2.156.99.1", "value": pid}],
            "name": [{"family": pinyin[0], "given": [pinyin[1]],
                      "extension": [{"url": EN_REPRESENTATION, "valueCode": "ABC"}]},
                     {"family": name[0], "given": [name[1]],
                      "extension": [{"url": EN_REPRESENTATION, "valueCode": "IDE"}]}],
            "gender": "female", "birthDate": "1960-01-02",
            "telecom": [{"system": "email", "value": "x@example.org"}, {"system": "phone", "value": "13900000000"}]}


def service_request(placer: str = "HIS-9001", *, accession: str = "F9001", site: str = "township-a",
                    status: str = "active", purpose: str = "排除肺炎", subject: str = "#pat",
                    contained: bool = True, **patient_kw: Any) -> dict[str, Any]:
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": status, "intent": "order", "priority": "stat",
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "system": "urn:oid:1.2.156.99.2",
             "value": placer},
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession}],
        "code": {"coding": [{"system": "urn:oid:1.2.156.99.3", "code": "CT001", "display": "头颅CT平扫"},
                            {"system": DCM, "code": "CT"}], "text": "头颅CT平扫"},
        "subject": {"reference": subject}, "occurrenceDateTime": "2026-12-08T10:30:00+08:00",
        "requester": {"display": "李四"}, "performer": [{"identifier": {"value": site}}],
        "reasonCode": [{"text": "头痛待查"}],
        "note": [{"text": purpose, "extension": [{"url": NOTE_KIND, "valueCode": "purpose"}]},
                 {"text": "高血压十年"}],
        "supportingInfo": [{"display": "既往脑梗"}],
    }
    if contained:
        sr["contained"] = [patient(**patient_kw)]
    return sr


@pytest.fixture
def client(county, settings) -> Iterator[TestClient]:
    with_token = County(settings.model_copy(update={"his_fhir_token": TOKEN}))
    try:
        with TestClient(create_app(with_token)) as c:
            yield c
    finally:
        with_token.close()


def orders(county) -> list[Order]:
    with county.sessions() as s:
        return list(s.execute(select(Order).order_by(Order.id)).scalars())


def audit_actions(county) -> list[str]:
    with county.sessions() as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


def assert_outcome(r, status: int, expression: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any(expression in issue.get("expression", []) for issue in body["issue"]), body


def test_a_service_request_becomes_an_order_and_reads_back(county, client) -> None:
    make_site(county)
    r = client.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    rid = r.json()["id"]
    assert r.headers["location"] == f"/fhir/ServiceRequest/{rid}/_history/1"
    (order,) = orders(county)
    assert (order.placer_order_number, order.placer_issuer, order.accession_number) == (
        "HIS-9001", "urn:oid:1.2.156.99.2", "F9001")
    assert (order.patient_id, order.patient_id_issuer) == ("P-1", "urn:oid:1.2.156.99.1")
    assert (order.patient_name, order.patient_name_pinyin) == ("王^小明", "Wang^Xiaoming")
    assert (order.patient_sex, order.patient_birth_date, order.patient_phone) == ("F", "19600102", "13900000000")
    assert (order.procedure_code, order.procedure_description, order.modality) == ("CT001", "头颅CT平扫", "CT")
    assert (order.priority, order.ordering_doctor, order.clinical_diagnosis) == ("stat", "李四", "头痛待查")
    assert (order.exam_purpose, order.history_summary) == ("排除肺炎", "既往脑梗")
    assert order.scheduled_at == datetime(2026, 12, 8, 2, 30, tzinfo=UTC)
    got = client.get(f"/fhir/ServiceRequest/{rid}", headers=AUTH)
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/fhir+json")
    body = got.json()
    assert body["id"] == rid and body["status"] == "active" and body["meta"]["versionId"] == "1"
    assert body["contained"][0]["name"][0]["family"] == "王"
    assert client.get("/fhir/ServiceRequest/999999", headers=AUTH).status_code == 404
    assert audit_actions(county) == ["order.create"]


def test_the_same_request_twice_is_one_order_a_change_bumps_it_and_revoked_cancels(county, client) -> None:
    make_site(county)
    first = client.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH)
    again = client.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH)
    assert (first.status_code, again.status_code) == (201, 200)
    rid = first.json()["id"]
    assert again.json()["id"] == rid and again.json()["meta"]["versionId"] == "1"
    changed = client.put(f"/fhir/ServiceRequest/{rid}", json=service_request(purpose="复查"), headers=AUTH)
    assert changed.status_code == 200 and changed.json()["meta"]["versionId"] == "2"
    cancelled = client.put(f"/fhir/ServiceRequest/{rid}", json=service_request(status="revoked"), headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "revoked"
    (order,) = orders(county)
    assert (order.exam_purpose, order.status, order.revision) == ("复查", "cancelled", 3)
    revived = client.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH)
    assert_outcome(revived, 422, "ServiceRequest.status")  # a late create does not undo the cancel
    missing = client.put("/fhir/ServiceRequest/424242", json=service_request(), headers=AUTH)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    other = client.put(f"/fhir/ServiceRequest/{rid}", json=service_request(placer="HIS-OTHER"), headers=AUTH)
    assert_outcome(other, 422, "ServiceRequest.identifier")
    assert audit_actions(county) == ["order.create", "order.update", "order.cancel"]


def test_invalid_requests_get_422_naming_the_path_and_change_nothing(county, client) -> None:
    make_site(county)
    no_plac = service_request()
    no_plac["identifier"] = no_plac["identifier"][1:]
    no_system = service_request()
    del no_system["identifier"][0]["system"]
    no_subject = service_request()
    del no_subject["subject"]
    bad_priority = service_request()
    bad_priority["priority"] = "whenever"
    bad_type = service_request()
    bad_type["occurrenceDateTime"] = {"not": "a date"}
    no_acsn = service_request()
    no_acsn["identifier"] = no_acsn["identifier"][:1]
    cases = [(no_plac, "ServiceRequest.identifier"), (no_system, "ServiceRequest.identifier[0].system"),
             (no_subject, "ServiceRequest.subject"), (bad_priority, "ServiceRequest.priority"),
             (bad_type, "ServiceRequest.occurrenceDateTime"), (no_acsn, "ServiceRequest.identifier"),
             (service_request(site="城关镇"), "ServiceRequest.performer[0].identifier.value")]
    for body, expression in cases:
        assert_outcome(client.post("/fhir/ServiceRequest", json=body, headers=AUTH), 422, expression)
    unknown = client.post("/fhir/ServiceRequest", json=service_request(site="城关镇"), headers=AUTH)
    assert "城关镇" in unknown.json()["issue"][0]["diagnostics"]
    assert orders(county) == [] and audit_actions(county) == []
    # a refused change leaves the stored order as it was
    rid = client.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH).json()["id"]
    refused = client.put(f"/fhir/ServiceRequest/{rid}", json=service_request(purpose="改了", site="nowhere"),
                         headers=AUTH)
    assert_outcome(refused, 422, "ServiceRequest.performer[0].identifier.value")
    (order,) = orders(county)
    assert (order.exam_purpose, order.revision) == ("排除肺炎", 1)


def test_a_transaction_bundle_is_all_or_nothing_and_a_batch_is_per_entry(county, client) -> None:
    make_site(county)

    def bundle(kind: str, *srs: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": kind, "entry": [
            {"fullUrl": "urn:uuid:6d1f0000-0000-4000-8000-000000000001", "resource": patient("P-7", name=("龔", "𪚥")),
             "request": {"method": "POST", "url": "Patient"}},
            *({"fullUrl": f"urn:uuid:6d1f0000-0000-4000-8000-00000000010{n}", "resource": sr,
               "request": {"method": "POST", "url": "ServiceRequest"}} for n, sr in enumerate(srs))]}

    ref = "urn:uuid:6d1f0000-0000-4000-8000-000000000001"
    good = service_request("HIS-B1", accession="B1", subject=ref, contained=False)
    bad = service_request("HIS-B2", accession="B2", subject=ref, contained=False, site="nowhere")
    failed = client.post("/fhir", json=bundle("transaction", good, bad), headers=AUTH)
    assert_outcome(failed, 422, "Bundle.entry[2].resource.performer[0].identifier.value")
    assert orders(county) == []
    wrong_ref = service_request("HIS-B3", accession="B3", subject="urn:uuid:nobody", contained=False)
    assert_outcome(client.post("/fhir", json=bundle("transaction", wrong_ref), headers=AUTH), 422,
                   "Bundle.entry[1].resource.subject")
    broken = bundle("transaction", good)
    broken["entry"][0]["resource"]["birthDate"] = "not-a-date"
    assert_outcome(client.post("/fhir", json=broken, headers=AUTH), 422, "Bundle.entry[0].resource.birthDate")
    broken["entry"][0]["resource"]["birthDate"], broken["entry"][0]["resource"]["gender"] = "1960-01-02", "woman"
    assert_outcome(client.post("/fhir", json=broken, headers=AUTH), 422, "Bundle.entry[0].resource.gender")
    done = client.post("/fhir", json=bundle("transaction", good), headers=AUTH)
    assert done.status_code == 200, done.text
    assert done.json()["type"] == "transaction-response"
    assert done.json()["entry"][1]["response"]["status"] == "201 Created"
    batch = client.post("/fhir", json=bundle("batch", good, bad), headers=AUTH)
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses == ["200 OK", "200 OK", "422"]
    (order,) = orders(county)
    assert order.patient_name.encode("gb18030") == RARE.encode("gb18030")
    with county.sessions() as s:
        row = s.get(Patient, order.patient_pk)
        assert row is not None and row.name == RARE
    assert_outcome(client.post("/fhir", json={"resourceType": "Bundle", "type": "document"}, headers=AUTH), 422,
                   "Bundle.type")


def test_the_endpoints_need_the_token_and_are_absent_without_one(county, client) -> None:
    make_site(county)
    r = client.post("/fhir/ServiceRequest", json=service_request())
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/fhir/ServiceRequest", json=service_request(),
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/fhir/ServiceRequest/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert orders(county) == []
    assert county.settings.his_fhir_token is None
    with TestClient(create_app(county)) as off:
        assert off.post("/fhir/ServiceRequest", json=service_request(), headers=AUTH).status_code == 404
        assert off.post("/fhir", json={}, headers=AUTH).status_code == 404


def test_the_logs_name_resources_but_no_patient(county, client, caplog) -> None:
    make_site(county)
    caplog.set_level(logging.DEBUG)
    body = service_request(pid="PID-SECRET-9")
    rid = client.post("/fhir/ServiceRequest", json=body, headers=AUTH).json()["id"]
    client.post("/fhir/ServiceRequest", json=service_request(site="nowhere", pid="PID-SECRET-9"), headers=AUTH)
    client.put(f"/fhir/ServiceRequest/{rid}", json=copy.deepcopy(body) | {"status": "revoked"}, headers=AUTH)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"ServiceRequest/{rid}" in text
    for secret in ("PID-SECRET", "王", "小明", "Wang", "Xiaoming", "1960", "13900000000"):
        assert secret not in text

"""FHIR R4 order endpoints for the HIS: POST/PUT/GET /fhir/ServiceRequest, POST /fhir (Bundle).

Bearer token RELAY_HIS_FHIR_TOKEN; unset, every route answers 404 (as if absent). Errors are
OperationOutcomes (application/fhir+json) naming the FHIR path; logs carry the resource id,
the placer number's system and the outcome, never patient data.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from relay.county.audit.service import Entry, append
from relay.county.auth.deps import CountyDep
from relay.county.context import County
from relay.county.errors import NotFound
from relay.county.orders import fhir_service
from relay.county.orders.fhir import FHIR_JSON, FhirProblem, Issue, outcome
from relay.county.orders.service import UpsertOutcome

log = logging.getLogger(__name__)
router = APIRouter(prefix="/fhir", tags=["fhir"], include_in_schema=True)
_STATUS = {UpsertOutcome.CREATED: 201}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type=FHIR_JSON,
                    headers=headers)


def _problem(problem: FhirProblem) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return _json(problem.status, outcome(problem.issues), headers)


def _check(county: County, request: Request) -> None:
    expected = county.settings.his_fhir_token
    if not expected:
        raise NotFound("the FHIR order endpoints are off: set RELAY_HIS_FHIR_TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise FhirProblem(401, Issue("", "the HIS's FHIR token is required (Authorization: Bearer)", "login"))


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FhirProblem(400, Issue("", f"the body is not UTF-8 JSON: {type(exc).__name__}", "structure")) from exc


def _audit(county: County, entries: list[Entry | None]) -> None:
    for entry in entries:
        if entry is not None:
            append(county.sessions, entry)


def _one(county: County, body: Any, expect_id: str | None) -> fhir_service.Stored:
    mapped, path = fhir_service.map_service_request(body, ZoneInfo(county.settings.timezone))
    if expect_id is not None and isinstance(body, dict) and body.get("id") not in (None, expect_id):
        raise FhirProblem(400, Issue("ServiceRequest.id", "the resource id differs from the URL's", "invalid"))
    with county.sessions() as session:
        stored = fhir_service.store(session, mapped, patient_path=path, expect_id=expect_id,
                                     zone=ZoneInfo(county.settings.timezone))
        session.commit()
    _audit(county, [stored.entry])
    return stored


def _answer(stored: fhir_service.Stored, what: str) -> Response:
    log.info("fhir %s ServiceRequest/%s: %s", what, stored.resource_id, stored.outcome.value)
    status = _STATUS.get(stored.outcome, 200)
    version = stored.resource["meta"]["versionId"]
    headers = {"ETag": f'W/"{version}"'}
    if status == 201:
        headers["Location"] = f"/fhir/ServiceRequest/{stored.resource_id}/_history/{version}"
    return _json(status, stored.resource, headers)


@router.post("/ServiceRequest")
async def create_service_request(request: Request, county: CountyDep) -> Response:
    """A ServiceRequest with its Patient contained (subject "#id"): 201 on a new order, 200
    when it was already stored (unchanged or changed), revoked/entered-in-error cancels."""
    try:
        _check(county, request)
        body = await _body(request)
        stored = await run_in_threadpool(_one, county, body, None)
    except FhirProblem as problem:
        log.info("fhir create ServiceRequest refused: %d %s", problem.status,
                 ",".join(i.expression for i in problem.issues))
        return _problem(problem)
    return _answer(stored, "create")


@router.put("/ServiceRequest/{resource_id}")
async def update_service_request(resource_id: str, request: Request, county: CountyDep) -> Response:
    """Change (or cancel, status revoked / entered-in-error) a stored order; 404 if unknown."""
    try:
        _check(county, request)
        body = await _body(request)
        stored = await run_in_threadpool(_one, county, body, resource_id)
    except FhirProblem as problem:
        log.info("fhir update ServiceRequest/%s refused: %d %s", resource_id[:16], problem.status,
                 ",".join(i.expression for i in problem.issues))
        return _problem(problem)
    return _answer(stored, "update")


def _read(county: County, resource_id: str) -> dict[str, Any]:
    with county.sessions() as session:
        row = fhir_service.find(session, resource_id)
        if row is None:
            raise FhirProblem(404, Issue("", f"no ServiceRequest/{resource_id[:16]}", "not-found"))
        return fhir_service.resource_of(session, row)


@router.get("/ServiceRequest/{resource_id}")
async def read_service_request(resource_id: str, request: Request, county: CountyDep) -> Response:
    """The stored order as a ServiceRequest (Patient contained; meta.versionId = revision)."""
    try:
        _check(county, request)
        resource = await run_in_threadpool(_read, county, resource_id)
    except FhirProblem as problem:
        return _problem(problem)
    return _json(200, resource, {"ETag": f'W/"{resource["meta"]["versionId"]}"'})


def _entry_response(stored: fhir_service.Stored) -> dict[str, Any]:
    status = "201 Created" if stored.outcome is UpsertOutcome.CREATED else "200 OK"
    version = stored.resource["meta"]["versionId"]
    return {"resource": stored.resource,
            "response": {"status": status, "location": f"ServiceRequest/{stored.resource_id}/_history/{version}",
                         "etag": f'W/"{version}"'}}


def _bundle(county: County, body: Any) -> dict[str, Any]:
    kind, entries = fhir_service.map_bundle_entries(body, ZoneInfo(county.settings.timezone))
    responses: list[dict[str, Any]] = []
    audit: list[Entry | None] = []
    if kind == "transaction":
        with county.sessions() as session:
            for _n, mapped, path in entries:
                if mapped is None:
                    responses.append({"response": {"status": "200 OK"}})
                    continue
                stored = fhir_service.store(session, mapped, patient_path=path, zone=ZoneInfo(county.settings.timezone))
                responses.append(_entry_response(stored))
                audit.append(stored.entry)
            session.commit()
    else:
        for _n, mapped, path in entries:
            if mapped is None:
                responses.append({"response": {"status": "200 OK"}})
                continue
            try:
                with county.sessions() as session:
                    stored = fhir_service.store(session, mapped, patient_path=path, zone=ZoneInfo(county.settings.timezone))
                    session.commit()
            except FhirProblem as problem:
                responses.append({"response": {"status": str(problem.status), "outcome": outcome(problem.issues)}})
                continue
            responses.append(_entry_response(stored))
            audit.append(stored.entry)
    _audit(county, audit)
    log.info("fhir %s bundle: %d entries, %d changed", kind, len(responses), sum(e is not None for e in audit))
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}


@router.post("")
async def bundle(request: Request, county: CountyDep) -> Response:
    """A Bundle of type transaction (all or nothing) or batch (each entry on its own) holding
    Patients and ServiceRequests whose subject references a Patient's fullUrl."""
    try:
        _check(county, request)
        body = await _body(request)
        answer = await run_in_threadpool(_bundle, county, body)
    except FhirProblem as problem:
        log.info("fhir bundle refused: %d %s", problem.status, ",".join(i.expression for i in problem.issues))
        return _problem(problem)
    return _json(200, answer)

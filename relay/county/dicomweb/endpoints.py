"""DICOMweb routes under /dicomweb: QIDO-RS, WADO-RS (instances, metadata), STOW-RS.

Search and retrieve need a person's bearer token (a technician sees only their own
site's studies); STOW-RS takes a site credential, like an edge upload, because what
pushes there is a township modality or PACS. Retrieved instances are the stored bytes,
unchanged (transfer syntax as received).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any

import pydicom
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep, SiteDep
from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.service import Principal
from relay.county.clock import now_utc
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance, Site, Study
from relay.county.dicomweb import json_model, multipart, qido, repository
from relay.county.errors import NotFound, RelayError
from relay.county.ingest.body import spool_body
from relay.county.ingest.endpoints import enqueue_committed, spool_dir
from relay.county.ingest.service import Upload, ingest_verified, verify_upload
from relay.dicom.vocab import IngestOutcome, Priority, Role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"
MAX_RESULTS = 1000
"""Largest page a QIDO-RS search returns; larger limits are capped (PS3.18 allows it)."""


def site_scope(principal: Principal) -> int | None:
    """The only site a caller may see (a technician's), or None for all."""
    if principal.role is Role.TECHNICIAN:
        return principal.site_id if principal.site_id is not None else -1
    return None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicomweb"


def _study_query(q: qido.Query, principal: Principal, limit: int, offset: int) -> repository.StudyQuery:
    return repository.StudyQuery(
        study_uids=qido.uid_list(q.get("StudyInstanceUID")),
        patient_name=q.get("PatientName"), patient_id=q.get("PatientID"),
        accession_number=q.get("AccessionNumber"), study_date=qido.date_range(q.get("StudyDate")),
        study_time=qido.time_range(q.get("StudyTime")),
        modality=q.get("ModalitiesInStudy"), site_id=site_scope(principal),
        limit=min(limit, MAX_RESULTS), offset=offset)


Limit = Annotated[int | None, Query(ge=1)]
Offset = Annotated[int, Query(ge=0)]


def _page(limit: int | None) -> int | None:
    return None if limit is None else min(limit, MAX_RESULTS)


@router.get("/studies")
def search_studies(
    request: Request, principal: PrincipalDep, session: SessionDep,
    limit: Annotated[int, Query(ge=1)] = 100, offset: Offset = 0,
) -> JSONResponse:
    """QIDO-RS: studies matching PatientName (wildcards), PatientID, StudyDate and StudyTime
    (ranges), ... (see :mod:`qido`), newest first."""
    q = qido.parse(request.query_params, qido.STUDY_KEYS)
    rows = repository.search_studies(session, _study_query(q, principal, limit, offset))
    base = _base(request)
    return JSONResponse([json_model.study_json(row, base_url=base) for row in rows], media_type=DICOM_JSON,
                        headers=q.warning())


def visible_study(session: Session, principal: Principal, study_uid: str) -> Study:
    """The study, if the caller may see it; else 404 (a technician's other sites' studies too)."""
    study = repository.study(session, study_uid, site_scope(principal))
    if study is None:
        raise NotFound(f"no study {study_uid}")
    return study


def _series_keys(q: qido.Query) -> repository.SeriesKeys:
    return repository.SeriesKeys(series_uids=qido.uid_list(q.get("SeriesInstanceUID")), modality=q.get("Modality"),
                                 series_number=qido.integer("SeriesNumber", q.get("SeriesNumber")))


@router.get("/studies/{study_uid}/series")
def search_series(study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep,
                  limit: Limit = None, offset: Offset = 0) -> JSONResponse:
    """QIDO-RS: the series of one study matching Modality, SeriesInstanceUID, SeriesNumber."""
    study = visible_study(session, principal, study_uid)
    q = qido.parse(request.query_params, qido.SERIES_KEYS | qido.IN_PATH)
    wanted = repository.SeriesQuery(study_pk=study.id, study_uid=study.study_uid, keys=_series_keys(q),
                                    limit=_page(limit), offset=offset)
    found = [] if qido.names_other_study(q, study_uid) else repository.search_series(session, wanted)
    base = _base(request)
    body = [json_model.series_json(study=study, series=s, n_instances=n, base_url=base, includes=q.includes)
            for s, n in found]
    return JSONResponse(body, media_type=DICOM_JSON, headers=q.warning())


def _instances_json(request: Request, principal: Principal, session: Session, study_uid: str,
                    series_uid: str | None, limit: int | None, offset: int) -> JSONResponse:
    study = visible_study(session, principal, study_uid)
    q = qido.parse(request.query_params, qido.INSTANCE_KEYS | qido.SERIES_KEYS | qido.IN_PATH)
    wanted = repository.InstanceQuery(
        study_uid=study_uid, series_uid=series_uid, series=_series_keys(q),
        sop_class_uids=qido.uid_list(q.get("SOPClassUID")), sop_uids=qido.uid_list(q.get("SOPInstanceUID")),
        instance_number=qido.integer("InstanceNumber", q.get("InstanceNumber")),
        limit=_page(limit), offset=offset)
    rows = [] if qido.names_other_study(q, study_uid) else repository.search_instances(session, wanted)
    base = _base(request)
    body = [json_model.instance_json(study=study, series=s, instance=i, base_url=base, includes=q.includes)
            for i, s in rows]
    return JSONResponse(body, media_type=DICOM_JSON, headers=q.warning())


@router.get("/studies/{study_uid}/instances")
def search_study_instances(study_uid: str, request: Request, principal: PrincipalDep,
                           session: SessionDep, limit: Limit = None, offset: Offset = 0) -> JSONResponse:
    """QIDO-RS: the instances of one study (series and instance keys)."""
    return _instances_json(request, principal, session, study_uid, None, limit, offset)


@router.get("/studies/{study_uid}/series/{series_uid}/instances")
def search_series_instances(study_uid: str, series_uid: str, request: Request, principal: PrincipalDep,
                            session: SessionDep, limit: Limit = None, offset: Offset = 0) -> JSONResponse:
    """QIDO-RS: the instances of one series matching SOPClassUID, SOPInstanceUID, InstanceNumber."""
    return _instances_json(request, principal, session, study_uid, series_uid, limit, offset)


def selected_instances(session: Session, principal: Principal, study_uid: str, series_uid: str | None,
              sop_uid: str | None) -> list[Instance]:
    visible_study(session, principal, study_uid)
    found = repository.instances_of(session, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    if not found:
        raise NotFound("no such instances")
    return found


def _audit_retrieve(county: County, request: Request, principal: Principal, instances: list[Instance],
                    what: str) -> None:
    audit(county, request, principal, Action.STUDY_RETRIEVE, object_type="study",
          object_id=instances[0].study_uid, detail=f"{what} instances={len(instances)}")


def _retrieve(county: County, instances: list[Instance]) -> StreamingResponse:
    boundary = multipart.new_boundary()
    parts = (county.store.get(i.object_key) for i in instances)
    return StreamingResponse(
        multipart.stream_parts(parts, boundary=boundary, part_type="application/dicom"),
        media_type=multipart.content_type(boundary, "application/dicom"))


@router.get("/studies/{study_uid}")
def retrieve_study(study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep,
                   county: CountyDep) -> StreamingResponse:
    """WADO-RS: every instance of a study, as stored (multipart/related application/dicom)."""
    found = selected_instances(session, principal, study_uid, None, None)
    _audit_retrieve(county, request, principal, found, "wado-rs study")
    return _retrieve(county, found)


@router.get("/studies/{study_uid}/series/{series_uid}")
def retrieve_series(study_uid: str, series_uid: str, request: Request, principal: PrincipalDep,
                    session: SessionDep, county: CountyDep) -> StreamingResponse:
    """WADO-RS: every instance of a series."""
    found = selected_instances(session, principal, study_uid, series_uid, None)
    _audit_retrieve(county, request, principal, found, f"wado-rs series={series_uid}")
    return _retrieve(county, found)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
def retrieve_instance(study_uid: str, series_uid: str, sop_uid: str, request: Request,
                      principal: PrincipalDep, session: SessionDep, county: CountyDep) -> StreamingResponse:
    """WADO-RS: one instance, byte for byte as the modality sent it."""
    found = selected_instances(session, principal, study_uid, series_uid, sop_uid)
    _audit_retrieve(county, request, principal, found, f"wado-rs instance={sop_uid}")
    return _retrieve(county, found)


OPENING_AUDIT_MIN = 30.0
"""Minutes during which a caller's further metadata requests for a study already audited
(its opening on the study page, or a viewer's first metadata request) add no audit row: a
study's opening is audited once with what was viewed, not once per series or instance."""


def audit_opening(county: County, request: Request, principal: Principal, session: Session, study_uid: str,
                  what: str) -> None:
    """Audit that ``principal`` opened the study, with its series and instance counts."""
    n_series, n_instances = repository.study_counts(session, study_uid)
    audit(county, request, principal, Action.STUDY_RETRIEVE, object_type="study", object_id=study_uid,
          detail=f"{what} series={n_series} instances={n_instances}")


def _audit_opening_once(county: County, request: Request, principal: Principal, session: Session,
                        study_uid: str) -> None:
    since = now_utc() - timedelta(minutes=OPENING_AUDIT_MIN)
    if not repository.recently_audited(session, actor=principal.username, action=Action.STUDY_RETRIEVE.value,
                                       study_uid=study_uid, since=since):
        audit_opening(county, request, principal, session, study_uid, "metadata")


def _stored_header(county: County, inst: Instance) -> dict[str, Any]:
    """The header read from the object itself: only for an instance indexed before the index
    kept headers (migration 0027), or whose header could not be turned into JSON."""
    ds = pydicom.dcmread(io.BytesIO(county.store.get(inst.object_key)), stop_before_pixels=True)
    body: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=lambda _e: "")
    return body


def _metadata(county: County, inst: Instance, header: str | None, base_url: str) -> dict[str, Any]:
    """DICOM JSON of the instance's header, from the index; pixel data as a BulkDataURI."""
    body: dict[str, Any] = json.loads(header) if header is not None else _stored_header(county, inst)
    body["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}  # JSON text is Unicode
    body["00083002"] = {"vr": "UI", "Value": [inst.transfer_syntax_uid]}
    url = (f"{base_url}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}")
    if "7FE00010" not in body and inst.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1."):
        body["7FE00010"] = {"vr": "OW", "BulkDataURI": url}
    return body


def _metadata_response(county: County, session: Session, instances: list[Instance], request: Request,
                       principal: Principal) -> JSONResponse:
    """The instances' metadata in one answer, from the index (headers kept at indexing)."""
    _audit_opening_once(county, request, principal, session, instances[0].study_uid)
    headers = repository.headers_of(session, [i.id for i in instances])
    base = _base(request)
    return JSONResponse([_metadata(county, i, headers.get(i.id), base) for i in instances], media_type=DICOM_JSON)


@router.get("/studies/{study_uid}/metadata")
def study_metadata(study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep,
                   county: CountyDep) -> JSONResponse:
    """WADO-RS: the metadata of every instance of a study (what a viewer such as OHIF loads)."""
    found = selected_instances(session, principal, study_uid, None, None)
    return _metadata_response(county, session, found, request, principal)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata")
def series_metadata(study_uid: str, series_uid: str, request: Request, principal: PrincipalDep,
                    session: SessionDep, county: CountyDep) -> JSONResponse:
    """WADO-RS: the metadata of every instance of a series, in one answer from the index
    (the study page loads a series with it)."""
    found = selected_instances(session, principal, study_uid, series_uid, None)
    return _metadata_response(county, session, found, request, principal)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
def instance_metadata(study_uid: str, series_uid: str, sop_uid: str, request: Request,
                      principal: PrincipalDep, session: SessionDep, county: CountyDep) -> JSONResponse:
    found = selected_instances(session, principal, study_uid, series_uid, sop_uid)
    return _metadata_response(county, session, found, request, principal)


def _stow_one(county: County, site: Site, data: bytes) -> tuple[IngestOutcome | None, str, str, int | None]:
    """Ingest one STOW part: (outcome or None on failure, SOP class, SOP instance, id).
    The part is hashed and its UIDs read once, here (no digest is claimed over STOW-RS)."""
    upload = Upload(data=data, claimed_sha256=None, priority=Priority.ROUTINE, calling_ae="STOW-RS",
                    edge_received_at=None)
    try:
        instance = verify_upload(upload, max_bytes=county.settings.max_instance_bytes)
        with session_scope(county.sessions) as session:
            result = ingest_verified(session=session, store=county.store, site=site, upload=upload,
                                     instance=instance)
    except RelayError as exc:
        log.info("STOW-RS part refused site=%s: %s", site.name, exc.detail)
        return None, "", "", None
    return result.outcome, instance.ids.sop_class_uid, result.sop_uid, result.instance_id


def _stow(county: County, site: Site, parts: Iterable[tuple[str, bytes]], base: str) -> tuple[int, dict[str, Any]]:
    """Store each part as it is read from the body; a body that proves malformed part-way
    is refused, after the parts before it (stored and committed) were enqueued."""
    pending: list[int] = []
    try:
        return _stow_parts(county, site, parts, base, pending)
    except RelayError:
        enqueue_committed(county, pending)
        raise


def _stow_parts(county: County, site: Site, parts: Iterable[tuple[str, bytes]], base: str,
                pending: list[int]) -> tuple[int, dict[str, Any]]:
    stored, failed = [], []
    for ptype, data in parts:
        outcome, sop_class, sop_uid, instance_id = ((None, "", "", None) if "application/dicom" not in ptype
                                                    else _stow_one(county, site, data))
        if outcome is None or outcome is IngestOutcome.QUARANTINED:
            # 0xC000: cannot understand; 0x0111: the UID is held with other bytes (kept aside)
            failed.append({"00081197": {"vr": "US", "Value": [0xC000 if outcome is None else 0x0111]}}
                          | ({"00081155": {"vr": "UI", "Value": [sop_uid]}} if sop_uid else {}))
            continue
        stored.append({"00081150": {"vr": "UI", "Value": [sop_class]},
                       "00081155": {"vr": "UI", "Value": [sop_uid]}})
        pending += [instance_id] if instance_id is not None else []
    enqueue_committed(county, pending)
    pending.clear()
    body: dict[str, Any] = {"00081190": {"vr": "UR", "Value": [f"{base}/studies"]}}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if stored else 409)
    return status, body


@router.post("/studies")
async def store_instances(request: Request, site: SiteDep, county: CountyDep) -> JSONResponse:
    """STOW-RS: store instances pushed by a township modality or PACS (site credential)."""
    content_type = request.headers.get("content-type", "")
    multipart.check_header(content_type)
    limit = county.settings.max_instance_bytes
    with await spool_body(request, limit=limit, what="STOW-RS request", spool_dir=spool_dir(county)) as body:
        parts = multipart.iter_related(body, content_type, max_part_bytes=limit)
        status, result = await run_in_threadpool(_stow, county, site, parts, _base(request))
    return JSONResponse(result, status_code=status, media_type=DICOM_JSON)

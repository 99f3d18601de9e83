"""Bundle upload routes for edges (protocol in relay.dicom.wire)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from relay.county.auth.deps import CountyDep, SiteDep
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Site, UploadBundle
from relay.county.ingest import bundles
from relay.county.ingest.body import read_body
from relay.county.ingest.endpoints import enqueue_committed, spool_dir
from relay.dicom import wire
from relay.dicom.vocab import BundleState, Priority

log = logging.getLogger(__name__)
router = APIRouter(prefix=wire.BUNDLES_PATH, tags=["ingest"])

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class AnnouncedInstance(BaseModel):
    sop_uid: str = Field(max_length=64)
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(gt=0)


class BundleIn(BaseModel):
    bundle_id: str = Field(description="A UUID chosen by the edge; posting it again resumes.")
    size: int = Field(gt=0, le=wire.MAX_BUNDLE_BYTES, description="Encoded bytes.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="Of the encoded bytes.")
    encoding: Literal["zstd", "identity"]
    priority: Priority = Priority.ROUTINE
    instances: list[AnnouncedInstance] = Field(min_length=1, max_length=100_000)

    @field_validator("bundle_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return str(uuid.UUID(value))


class InstanceResult(BaseModel):
    sop_uid: str
    sha256: str
    outcome: str


class BundleOut(BaseModel):
    bundle_id: str
    received: int = Field(description="Bytes of the encoded bundle the county holds.")
    state: str = Field(description="open or complete")
    results: list[InstanceResult] | None = None


def _out(bundle: UploadBundle) -> BundleOut:
    results = json.loads(bundle.results_json) if bundle.results_json else None
    return BundleOut(bundle_id=bundle.bundle_id, received=bundle.received, state=bundle.state,
                     results=results)


def _open(county: County, site: Site, body: BundleIn) -> BundleOut:
    spec = bundles.BundleSpec(bundle_id=body.bundle_id, size=body.size, sha256=body.sha256,
                              encoding=body.encoding, priority=body.priority,
                              instances=[i.model_dump() for i in body.instances])
    with session_scope(county.sessions) as session:
        return _out(bundles.open_bundle(session=session, site=site, spec=spec))


@router.post("", response_model=BundleOut)
async def post_bundle(body: BundleIn, site: SiteDep, county: CountyDep) -> BundleOut:
    """Open a bundle, or learn how much of it the county already holds."""
    return await run_in_threadpool(_open, county, site, body)


@router.get("/{bundle_id}", response_model=BundleOut)
def get_bundle(bundle_id: str, site: SiteDep, county: CountyDep) -> BundleOut:
    """Progress of a bundle: where to resume after a cut."""
    with session_scope(county.sessions) as session:
        return _out(bundles.progress(session=session, site=site, bundle_id=bundle_id))


def _put(county: County, site: Site, bundle_id: str, offset: int, data: bytes) -> int:
    with session_scope(county.sessions) as session:
        return bundles.put_chunk(session=session, store=county.store, site=site,
                                 bundle_id=bundle_id, offset=offset, data=data)


@router.patch("/{bundle_id}", status_code=204, response_class=Response)
async def put_chunk(
    bundle_id: str, request: Request, site: SiteDep, county: CountyDep,
    offset: Annotated[int, Header(alias=wire.HEADER_UPLOAD_OFFSET, ge=0)],
) -> Response:
    """Append one chunk at ``Upload-Offset``; 204 once it is durable at the county."""
    data = await read_body(request, limit=wire.MAX_CHUNK_BYTES, what="chunk", spool_dir=spool_dir(county))
    held = await run_in_threadpool(_put, county, site, bundle_id, offset, data)
    return Response(status_code=204, headers={wire.HEADER_UPLOAD_OFFSET: str(held)})


def _complete(county: County, site: Site, bundle_id: str) -> list[dict[str, Any]]:
    started = time.perf_counter()
    with session_scope(county.sessions) as session:
        done = bundles.complete_bundle(session=session, store=county.store, site=site,
                                       bundle_id=bundle_id,
                                       max_bytes=county.settings.max_instance_bytes)
    enqueue_committed(county, done.pending_instance_ids)
    with session_scope(county.sessions) as session:
        bundles.mark_complete(session=session, store=county.store, site=site, bundle_id=bundle_id,
                              results=done.results)
    log.info("bundle complete site=%s bundle=%s instances=%d ms=%.1f", site.name, bundle_id,
             len(done.results), (time.perf_counter() - started) * 1000)
    return done.results


@router.post("/{bundle_id}/complete", response_model=BundleOut)
async def complete_bundle(bundle_id: str, site: SiteDep, county: CountyDep) -> BundleOut:
    """Ingest every instance of a fully received bundle. 200: the county holds them all."""
    results = await run_in_threadpool(_complete, county, site, bundle_id)
    with session_scope(county.sessions) as session:
        bundle = bundles.progress(session=session, site=site, bundle_id=bundle_id)
    return BundleOut(bundle_id=bundle_id, received=bundle.received, state=BundleState.COMPLETE.value,
                     results=[InstanceResult(**r) for r in results])

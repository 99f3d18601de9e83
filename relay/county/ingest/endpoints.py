"""POST /api/ingest/instances: the edge's upload (contract in relay.dicom.wire)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from relay.county import jobs
from relay.county.auth.deps import CountyDep, SiteDep
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Site
from relay.county.errors import Unprocessable
from relay.county.ingest.body import read_body
from relay.county.ingest.service import IngestResult, Upload, ingest_instance
from relay.dicom import wire
from relay.dicom.vocab import Priority

log = logging.getLogger(__name__)
router = APIRouter(tags=["ingest"])


class IngestOut(BaseModel):
    outcome: str
    sop_instance_uid: str
    sha256: str


def spool_dir(county: County) -> Path:
    """Where request bodies too large for memory wait while they arrive."""
    return county.settings.data_dir / "incoming"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"{wire.HEADER_RECEIVED_AT} is not ISO 8601") from None


def enqueue_committed(county: County, instance_ids: list[int]) -> None:
    """Enqueue indexing of committed instances (503 if the queue refuses: the edge sends again)."""
    jobs.enqueue_committed(county.celery, county.settings, instance_ids)


def _ingest_committed(county: County, site: Site, upload: Upload) -> IngestResult:
    """Store and commit, then enqueue."""
    with session_scope(county.sessions) as session:
        result = ingest_instance(session=session, store=county.store, site=site, upload=upload,
                                 max_bytes=county.settings.max_instance_bytes)
    if result.instance_id is not None:
        enqueue_committed(county, [result.instance_id])
    return result


@router.post(wire.INGEST_PATH, response_model=IngestOut)
async def upload_instance(
    request: Request,
    site: SiteDep,
    county: CountyDep,
    sha256: Annotated[str, Header(alias=wire.HEADER_SHA256)],
    priority: Annotated[Priority, Header(alias=wire.HEADER_PRIORITY)] = Priority.ROUTINE,
    calling_ae: Annotated[str, Header(alias=wire.HEADER_CALLING_AE)] = "",
    received_at: Annotated[str | None, Header(alias=wire.HEADER_RECEIVED_AT)] = None,
) -> IngestOut:
    """Receive one DICOM instance from a township edge. 200 means the county holds it."""
    started = time.perf_counter()
    data = await read_body(request, limit=county.settings.max_instance_bytes, what="instance",
                           spool_dir=spool_dir(county))
    upload = Upload(data=data, claimed_sha256=sha256, priority=priority,
                    calling_ae=calling_ae, edge_received_at=_parse_time(received_at))
    result = await run_in_threadpool(_ingest_committed, county, site, upload)
    log.info("ingest site=%s ae=%s sop=%s bytes=%d sha256=%s outcome=%s ms=%.1f", site.name,
             calling_ae, result.sop_uid, len(upload.data), result.sha256[:16], result.outcome.value,
             (time.perf_counter() - started) * 1000)
    return IngestOut(outcome=result.outcome.value, sop_instance_uid=result.sop_uid, sha256=result.sha256)

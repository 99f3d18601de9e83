"""POST /api/edges/heartbeat (edges), GET /api/edges (administrators)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel

from relay.county.auth.deps import AdminDep, SessionDep, SiteDep
from relay.county.edges import service
from relay.county.edges.schemas import EdgeOut, HeartbeatIn

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/edges", tags=["edges"])


class HeartbeatOut(BaseModel):
    clock_offset_s: float


@router.post("/heartbeat", response_model=HeartbeatOut)
def heartbeat(beat: HeartbeatIn, site: SiteDep, session: SessionDep) -> HeartbeatOut:
    """An edge's minute report: spool depth, oldest unsent, goodput, disk, version, clock."""
    offset = service.record_heartbeat(session=session, site=site, beat=beat)
    log.info("heartbeat site=%s spool=%d bytes=%d offset_s=%.1f", site.name, beat.spool_instances,
             beat.spool_bytes, offset)
    return HeartbeatOut(clock_offset_s=offset)


@router.get("", response_model=list[EdgeOut])
def list_edges(_admin: AdminDep, session: SessionDep) -> list[EdgeOut]:
    """Every township edge with its latest health; silent edges flagged."""
    return service.fleet(session=session)

"""POST /api/edges/heartbeat (edges), GET /api/edges (administrators)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel

from relay.county.audit import checkpoint
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep, SiteDep
from relay.county.edges import service
from relay.county.edges.schemas import AuditCheckpointOut, EdgeOut, HeartbeatIn

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/edges", tags=["edges"])


class HeartbeatOut(BaseModel):
    clock_offset_s: float
    audit_checkpoint: AuditCheckpointOut | None = None
    """The county's newest signed audit checkpoint, for the edge to keep (None before the first)."""


@router.post("/heartbeat", response_model=HeartbeatOut)
def heartbeat(beat: HeartbeatIn, site: SiteDep, session: SessionDep) -> HeartbeatOut:
    """An edge's minute report: spool depth, oldest unsent, goodput, disk, version, clock. The
    answer carries the newest audit checkpoint, which the edge keeps in its spool folder."""
    offset = service.record_heartbeat(session=session, site=site, beat=beat)
    log.info("heartbeat site=%s spool=%d bytes=%d offset_s=%.1f", site.name, beat.spool_instances,
             beat.spool_bytes, offset)
    newest = checkpoint.latest(session)
    return HeartbeatOut(clock_offset_s=offset,
                        audit_checkpoint=AuditCheckpointOut(**newest.to_dict()) if newest else None)


@router.get("", response_model=list[EdgeOut])
def list_edges(_admin: AdminDep, session: SessionDep, county: CountyDep) -> list[EdgeOut]:
    """Every township edge with its latest health and alarms: silent for more than 10 minutes,
    or an unsent instance older than RELAY_EDGE_SPOOL_ALARM_MINUTES (default 60)."""
    threshold = timedelta(minutes=county.settings.edge_spool_alarm_minutes)
    return service.fleet(session=session, spool_alarm_after=threshold)

"""POST /api/edges/heartbeat and GET /api/edges/technicians (edges), GET /api/edges
(administrators)."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import timedelta

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel

from relay.county.audit import checkpoint
from relay.county.audit.service import Action, Entry, append
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep, SiteDep
from relay.county.edges import service, technicians
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


class TechnicianOut(BaseModel):
    username: str
    display_name: str
    password_hash: str
    """Argon2id PHC string; empty for a disabled login."""
    active: bool


@router.get("/technicians", response_model=list[TechnicianOut],
            responses={304: {"description": "The edge already holds this list (If-None-Match)."}})
def site_technicians(site: SiteDep, session: SessionDep, county: CountyDep, request: Request,
                     if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """This site's technicians with their password hashes, for the edge's offline login
    cache. ETag: the list's digest; a list that leaves the county is audited."""
    found = technicians.for_site(session=session, site=site)
    etag = technicians.digest(found)
    if if_none_match == etag:
        log.info("technicians site=%s unchanged n=%d", site.name, len(found))
        return Response(status_code=304, headers={"ETag": etag})
    append(county.sessions, Entry(actor=f"site:{site.name}", role="site", action=Action.SITE_TECHNICIANS,
                                  object_type="site", object_id=site.name,
                                  source=request.client.host if request.client else "",
                                  detail=f"technicians={len(found)} active={sum(t.active for t in found)}"))
    log.info("technicians site=%s sent n=%d", site.name, len(found))
    body = json.dumps([dataclasses.asdict(t) for t in found], ensure_ascii=False)
    return Response(body, media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-store"})

"""GET /api/quarantine: conflicting bytes kept aside, for the administrator to resolve."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from relay.county.auth.deps import AdminDep, SessionDep
from relay.county.db.models import Instance, QuarantinedInstance, Site

router = APIRouter(prefix="/api/quarantine", tags=["ingest"])


class QuarantinedOut(BaseModel):
    sop_instance_uid: str
    site: str
    received_at: datetime
    sha256: str
    size: int
    held_sha256: str | None
    """The digest of the bytes the county keeps as the instance."""
    held_size: int | None


@router.get("", response_model=list[QuarantinedOut])
def list_quarantine(_admin: AdminDep, session: SessionDep) -> list[QuarantinedOut]:
    """Every upload whose SOP Instance UID was already held with other bytes, newest first."""
    rows = session.execute(
        select(QuarantinedInstance, Site.name, Instance.sha256, Instance.size)
        .join(Site, Site.id == QuarantinedInstance.site_id)
        .outerjoin(Instance, Instance.sop_uid == QuarantinedInstance.sop_uid)
        .order_by(QuarantinedInstance.received_at.desc()).limit(1000)).all()
    return [QuarantinedOut(sop_instance_uid=q.sop_uid, site=site, sha256=q.sha256, size=q.size,
                           received_at=q.received_at,
                           held_sha256=held_sha, held_size=held_size)
            for q, site, held_sha, held_size in rows]

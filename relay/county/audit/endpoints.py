"""GET /api/audit (search) and GET /api/audit/verify, for administrators; and the helper
the other routes call to record what a person did."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from relay.county.auth.deps import AdminDep, SessionDep
from relay.county.auth.service import Principal
from relay.county.context import County
from relay.county.db.models import AuditEvent
from relay.county.audit.service import Action, Entry, append, verify

router = APIRouter(prefix="/api/audit", tags=["audit"])


def audit(county: County, request: Request, principal: Principal, action: Action, *,
          object_type: str = "", object_id: str = "", detail: str = "") -> None:
    """Record that ``principal`` did ``action`` (from a route; its own transaction)."""
    source = request.client.host if request.client else ""
    append(county.sessions, Entry(actor=principal.username, role=principal.role.value, action=action,
                                  object_type=object_type, object_id=object_id, source=source,
                                  detail=detail))


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    object_type: str
    object_id: str
    outcome: str
    source: str
    detail: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_id: int | None
    reason: str


@router.get("", response_model=list[AuditOut])
def search(
    _admin: AdminDep, session: SessionDep, actor: str | None = None, action: str | None = None,
    object_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AuditOut]:
    """Audit events, newest first, filtered by actor, action, object (e.g. a study UID) and time."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    for column, value in ((AuditEvent.actor, actor), (AuditEvent.action, action),
                          (AuditEvent.object_id, object_id)):
        stmt = stmt.where(column == value) if value else stmt
    stmt = stmt.where(AuditEvent.at >= since) if since else stmt
    stmt = stmt.where(AuditEvent.at <= until) if until else stmt
    return [AuditOut(id=e.id, at=e.at, actor=e.actor,
                     role=e.role, action=e.action, object_type=e.object_type, object_id=e.object_id,
                     outcome=e.outcome, source=e.source, detail=e.detail)
            for e in session.execute(stmt).scalars()]


@router.get("/verify", response_model=VerifyOut)
def verify_chain(_admin: AdminDep, session: SessionDep) -> VerifyOut:
    """Walk the hash chain: ok, or the first row that was changed, removed or inserted."""
    result = verify(session)
    return VerifyOut(ok=result.ok, checked=result.checked, first_bad_id=result.first_bad_id,
                     reason=result.reason)

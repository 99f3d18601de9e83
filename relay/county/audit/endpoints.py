"""GET /api/audit (search), /api/audit/export.xml (DICOM audit messages) and
/api/audit/verify, for administrators; and the helper
the other routes call to record what a person did."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Select, select

from relay.county.audit import atna
from relay.county.audit.checkpoint import load_anchors
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep
from relay.county.context import County
from relay.county.db.models import AuditEvent
from relay.county.audit.service import Action, Actor, Entry, append, verify

router = APIRouter(prefix="/api/audit", tags=["audit"])


def audit(county: County, request: Request, principal: Actor, action: Action, *,
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
    checkpoints: int = Field(description="Signed checkpoints the rows matched.")
    anchored: int = Field(description="Events covered by the newest matching checkpoint.")
    latest_checkpoint_at: datetime | None
    missing_after_id: int | None = Field(description="A cut tail: the last event left, after which "
                                                     "missing_count events were removed.")
    missing_count: int | None
    problems: list[str] = Field(description="Every checkpoint problem: a bad signature, an unreadable line, no key.")


@dataclass(frozen=True, slots=True)
class Filters:
    """What an administrator searches or exports the trail by."""

    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, stmt: Select[AuditEvent]) -> Select[AuditEvent]:
        for column, value in ((AuditEvent.actor, self.actor), (AuditEvent.action, self.action),
                              (AuditEvent.object_type, self.object_type), (AuditEvent.object_id, self.object_id)):
            stmt = stmt.where(column == value) if value else stmt
        stmt = stmt.where(AuditEvent.at >= self.since) if self.since else stmt
        return stmt.where(AuditEvent.at <= self.until) if self.until else stmt


def _filters(actor: str | None = None, action: str | None = None, object_type: str | None = None,
             object_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> Filters:
    return Filters(actor=actor, action=action, object_type=object_type, object_id=object_id, since=since, until=until)


FiltersDep = Annotated[Filters, Depends(_filters)]


@router.get("", response_model=list[AuditOut])
def search(
    _admin: AdminDep, session: SessionDep, filters: FiltersDep,
    before_id: Annotated[int | None, Query(description="page: only events older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AuditOut]:
    """Audit events, newest first, filtered by user (actor), action, object (a study UID with
    object_type=study) and time; page backwards with before_id = the last id received."""
    stmt = filters.apply(select(AuditEvent)).order_by(AuditEvent.id.desc()).limit(limit)
    stmt = stmt.where(AuditEvent.id < before_id) if before_id else stmt
    return [AuditOut(id=e.id, at=e.at, actor=e.actor,
                     role=e.role, action=e.action, object_type=e.object_type, object_id=e.object_id,
                     outcome=e.outcome, source=e.source, detail=e.detail)
            for e in session.execute(stmt).scalars()]


EXPORT_BATCH = 1000
"""Rows read per query while streaming an export (memory stays flat for any range)."""
DEFAULT_EXPORT_WINDOW = timedelta(days=1)


def _atna_stream(county: County, filters: Filters) -> Iterator[str]:
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield f'<AuditMessages since="{filters.since:%Y-%m-%dT%H:%M:%S%z}" until="{filters.until:%Y-%m-%dT%H:%M:%S%z}">\n'
    after = 0
    with county.sessions() as session:  # its own: the response streams after the route returned
        while True:
            stmt = filters.apply(select(AuditEvent)).where(AuditEvent.id > after).order_by(AuditEvent.id)
            rows = session.execute(stmt.limit(EXPORT_BATCH)).scalars().all()
            if not rows:
                break
            yield "".join(atna.to_xml(row) + "\n" for row in rows)
            after = rows[-1].id
            session.expunge_all()
    yield "</AuditMessages>\n"


@router.get("/export.xml", response_class=StreamingResponse,
            responses={200: {"content": {"application/xml": {}},
                             "description": "<AuditMessages> holding one DICOM PS3.15 A.5.1 AuditMessage per event"}})
def export_atna(admin: AdminDep, county: CountyDep, request: Request, filters: FiltersDep) -> StreamingResponse:
    """The trail in [since, until] (default: the last 24 hours) as DICOM audit messages (IHE
    ATNA), oldest first, streamed. The export itself is recorded in the trail (as an Export
    event) before the stream starts, so the next export covering that time shows it."""
    until = filters.until or datetime.now(UTC)
    filters = replace(filters, since=filters.since or until - DEFAULT_EXPORT_WINDOW, until=until)
    audit(county, request, admin, Action.EXPORT, object_type="audit",
          detail=f"format=dicom-atna since={filters.since:%Y-%m-%dT%H:%M:%S%z} until={until:%Y-%m-%dT%H:%M:%S%z}")
    return StreamingResponse(_atna_stream(county, filters), media_type="application/xml",
                             headers={"Content-Disposition": 'attachment; filename="audit-atna.xml"'})


@router.get("/verify", response_model=VerifyOut)
def verify_chain(_admin: AdminDep, session: SessionDep, county: CountyDep) -> VerifyOut:
    """Walk the hash chain and compare it with the signed checkpoints (the database's and the
    checkpoint folder's): ok, or the first row that was changed, removed or inserted, a
    rewritten stretch, a cut tail (how many events are missing after which), a bad signature."""
    result = verify(session, anchors=load_anchors(settings=county.settings, session=session))
    return VerifyOut(ok=result.ok, checked=result.checked, first_bad_id=result.first_bad_id,
                     reason=result.reason, checkpoints=result.checkpoints, anchored=result.anchored,
                     latest_checkpoint_at=result.latest_checkpoint_at, missing_after_id=result.missing_after_id,
                     missing_count=result.missing_count, problems=list(result.problems))

"""Reading queue routes: claim the next study, claim one, release, open."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from relay.county.auth.deps import PrincipalDep, SessionDep
from relay.county.reading import service

router = APIRouter(prefix="/api/worklist", tags=["worklist"])


class ClaimOut(BaseModel):
    study_instance_uid: str
    state: str
    priority: str


def _out(claimed: service.Claimed) -> ClaimOut:
    return ClaimOut(study_instance_uid=claimed.study_uid, state=claimed.state, priority=claimed.priority)


@router.post("/claim-next", response_model=ClaimOut, responses={204: {"description": "queue empty"}})
def claim_next(principal: PrincipalDep, session: SessionDep) -> ClaimOut | Response:
    """Take the most urgent unassigned study (STAT first, then oldest)."""
    claimed = service.claim_next(session=session, principal=principal)
    return Response(status_code=204) if claimed is None else _out(claimed)


@router.post("/{study_uid}/claim", response_model=ClaimOut)
def claim(study_uid: str, principal: PrincipalDep, session: SessionDep) -> ClaimOut:
    """Take one chosen study; 409 if another reader holds it."""
    return _out(service.claim(session=session, principal=principal, study_uid=study_uid))


@router.post("/{study_uid}/release", response_model=ClaimOut)
def release(study_uid: str, principal: PrincipalDep, session: SessionDep) -> ClaimOut:
    """Put a held study back on the queue (its holder or an administrator)."""
    return _out(service.release(session=session, principal=principal, study_uid=study_uid))


@router.post("/{study_uid}/open", response_model=ClaimOut)
def open_study(study_uid: str, principal: PrincipalDep, session: SessionDep) -> ClaimOut:
    """The holder opens the study in the viewer: reading starts."""
    return _out(service.open_study(session=session, principal=principal, study_uid=study_uid))

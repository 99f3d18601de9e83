"""Reading queue routes: claim the next study, claim one, release, open; plus the duty roster's."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.auth.service import Principal
from relay.county.context import County
from relay.county.reading import service
from relay.county.reading.roster_endpoints import router as roster_router

queue = APIRouter(prefix="/api/worklist", tags=["worklist"])


class ClaimOut(BaseModel):
    study_instance_uid: str
    state: str
    priority: str


def _out(claimed: service.Claimed) -> ClaimOut:
    return ClaimOut(study_instance_uid=claimed.study_uid, state=claimed.state, priority=claimed.priority)


def _act(step: Callable[..., service.Claimed], action: Action, study_uid: str, principal: Principal,
         session: Session, county: County, request: Request) -> ClaimOut:
    """Do one reading-queue step on a study and audit it."""
    done = step(session=session, principal=principal, study_uid=study_uid)
    audit(county, request, principal, action, object_type="study", object_id=study_uid)
    return _out(done)


@queue.post("/claim-next", response_model=ClaimOut, responses={204: {"description": "queue empty"}})
def claim_next(principal: PrincipalDep, session: SessionDep, county: CountyDep,
               request: Request) -> ClaimOut | Response:
    """Take the most urgent unassigned study (STAT first, then oldest)."""
    claimed = service.claim_next(session=session, principal=principal)
    if claimed is None:
        return Response(status_code=204)
    audit(county, request, principal, Action.STUDY_CLAIM, object_type="study", object_id=claimed.study_uid)
    return _out(claimed)


@queue.post("/{study_uid}/claim", response_model=ClaimOut)
def claim(study_uid: str, principal: PrincipalDep, session: SessionDep, county: CountyDep,
          request: Request) -> ClaimOut:
    """Take one chosen study; 409 if another reader holds it."""
    return _act(service.claim, Action.STUDY_CLAIM, study_uid, principal, session, county, request)


@queue.post("/{study_uid}/release", response_model=ClaimOut)
def release(study_uid: str, principal: PrincipalDep, session: SessionDep, county: CountyDep,
            request: Request) -> ClaimOut:
    """Put a held study back on the queue (its holder or an administrator)."""
    return _act(service.release, Action.STUDY_RELEASE, study_uid, principal, session, county, request)


@queue.post("/{study_uid}/open", response_model=ClaimOut)
def open_study(study_uid: str, principal: PrincipalDep, session: SessionDep, county: CountyDep,
               request: Request) -> ClaimOut:
    """The holder opens the study in the viewer: reading starts."""
    return _act(service.open_study, Action.STUDY_OPEN, study_uid, principal, session, county, request)


router = APIRouter()
"""The reading package's routes: the queue (/api/worklist/…) and the duty roster (/api/roster/…)."""
router.include_router(queue)
router.include_router(roster_router)

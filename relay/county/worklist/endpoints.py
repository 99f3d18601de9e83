"""GET /api/worklist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.worklist import service
from relay.county.worklist.schemas import WorklistItem

router = APIRouter(prefix="/api", tags=["worklist"])


@router.get("/worklist", response_model=list[WorklistItem])
def get_worklist(
    principal: PrincipalDep, session: SessionDep, county: CountyDep,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
) -> list[WorklistItem]:
    """Studies waiting to be read, STAT first, then oldest first."""
    settings = county.settings
    sla = service.SlaTargets(stat=settings.sla_stat_minutes, urgent=settings.sla_urgent_minutes,
                             routine=settings.sla_routine_minutes)
    return service.worklist(session=session, principal=principal, limit=limit, sla=sla)

"""GET /api/worklist."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.sla import SlaPolicy
from relay.county.worklist import service
from relay.county.worklist.repository import Filters
from relay.county.worklist.schemas import WorklistItem
from relay.dicom.vocab import Priority

router = APIRouter(prefix="/api", tags=["worklist"])


@router.get("/worklist", response_model=list[WorklistItem])
def get_worklist(
    principal: PrincipalDep, session: SessionDep, county: CountyDep,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    priority: Annotated[Priority | None, Query(description="only this priority")] = None,
    modality: Annotated[str | None, Query(max_length=16, pattern=r"^[A-Za-z0-9_]+$",
                                          description="only studies with this modality, e.g. CT or ECG")] = None,
    site: Annotated[str | None, Query(max_length=128, description="only this township (site name)")] = None,
    state: Annotated[Literal["queued", "assigned", "reading"] | None, Query(description="only this state")] = None,
    mine: Annotated[bool, Query(description="only studies I hold (with unassigned: mine or nobody's)")] = False,
    unassigned: Annotated[bool, Query(description="only studies nobody holds")] = False,
    patient: Annotated[str | None, Query(max_length=64,
                                         description="part of the patient's name or ID, any case")] = None,
) -> list[WorklistItem]:
    """Studies waiting to be read, STAT first, then oldest first; narrowed by the filters
    given (all must match). A technician still sees only their own township's studies."""
    filters = Filters(priority=priority.value if priority else None, modality=modality, site=site, state=state,
                      mine=mine, unassigned=unassigned, patient=patient)
    return service.worklist(session=session, principal=principal, limit=limit,
                            sla=SlaPolicy.from_settings(county.settings), filters=filters)

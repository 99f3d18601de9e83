"""GET /api/his/messages and POST /api/his/messages/{id}/retry, for administrators."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep
from relay.county.errors import Conflict, NotFound
from relay.county.his.delivery import State, list_messages, retry_now

router = APIRouter(prefix="/api/his", tags=["operations"])


class HisMessageOut(BaseModel):
    id: int
    report_id: int
    study_instance_uid: str
    revision: int
    kind: str
    channel: str
    message_id: str
    state: str
    overdue: bool
    """Not acknowledged after RELAY_HIS_OVERDUE_MINUTES."""
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime
    ack_code: str
    acked_at: datetime | None
    last_error: str
    order_cancelled: bool


@router.get("/messages", response_model=list[HisMessageOut])
def his_messages(_admin: AdminDep, session: SessionDep, county: CountyDep,
                 state: State | None = Query(None)) -> list[HisMessageOut]:
    """Signed reports on their way to the HIS: rejected first, then pending, then acknowledged."""
    return [HisMessageOut(id=v.row.id, report_id=v.row.report_pk, study_instance_uid=v.study_uid,
                          revision=v.revision, kind=v.kind, channel=v.row.channel, message_id=v.row.message_id,
                          state=v.row.state, overdue=v.overdue, attempts=v.row.attempts,
                          created_at=v.row.created_at, last_attempt_at=v.row.last_attempt_at,
                          next_attempt_at=v.row.next_attempt_at, ack_code=v.row.ack_code, acked_at=v.row.acked_at,
                          last_error=v.row.last_error, order_cancelled=v.row.order_cancelled)
            for v in list_messages(session=session, settings=county.settings, state=state)]


@router.post("/messages/{message_pk}/retry", status_code=202)
def retry_his_message(message_pk: int, admin: AdminDep, session: SessionDep, county: CountyDep,
                      request: Request) -> dict[str, str]:
    """Send it at the next round instead of after its backoff."""
    row = retry_now(session=session, message_pk=message_pk)
    if row is None:
        raise NotFound(f"no HIS message {message_pk}")
    if row.state == State.ACKED.value:
        raise Conflict(f"HIS message {row.message_id} was already acknowledged ({row.ack_code})")
    audit(county, request, admin, Action.HIS_DELIVERY, object_type="report", object_id=str(row.report_pk),
          detail=f"retry channel={row.channel} message_id={row.message_id}")
    return {"status": "due"}

"""GET /api/dead-letters and POST /api/dead-letters/{id}/retry, for administrators."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep
from relay.county.errors import NotFound
from relay.county.dead_letters import attempts
from relay.county.jobs import ENQUEUE

router = APIRouter(prefix="/api/dead-letters", tags=["operations"])


class DeadLetterOut(BaseModel):
    id: int
    task: str
    key: str
    attempts: int
    first_attempt_at: datetime
    dead_at: datetime
    last_error: str


@router.get("", response_model=list[DeadLetterOut])
def list_dead_letters(_admin: AdminDep, session: SessionDep) -> list[DeadLetterOut]:
    """Work that failed past its attempt cap, newest first."""
    return [DeadLetterOut(id=r.id, task=r.task, key=r.key, attempts=r.attempts,
                          first_attempt_at=r.first_attempt_at, dead_at=r.dead_at,  # type: ignore[arg-type]
                          last_error=r.last_error) for r in attempts.dead_letters(session=session)]


@router.post("/{dead_letter_id}/retry", status_code=202)
def retry_dead_letter(dead_letter_id: int, admin: AdminDep, session: SessionDep,
                      county: CountyDep, request: Request) -> dict[str, str]:
    """Give the work a fresh set of attempts and enqueue it again."""
    row = attempts.revive(session=session, task_attempt_id=dead_letter_id)
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    enqueue = ENQUEUE[row.task]
    enqueue(county.celery, county.settings, int(row.key))
    audit(county, request, admin, Action.DEAD_LETTER_RETRY, object_type=row.task, object_id=row.key)
    return {"status": "enqueued"}

"""GET /api/roster/critical and /api/roster/critical/alerts: the critical results (危急值)
still waiting for the township, which the on-duty lead answers for. Beside the roster's
routes (same prefix), but reports' own: the alerts read the roster, not the other way."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from pydantic import BaseModel, Field

from relay.county.auth.deps import CountyDep, SessionDep
from relay.county.clock import now_utc
from relay.county.errors import Forbidden
from relay.county.reading import roster
from relay.county.reading.roster_endpoints import CountyStaffDep
from relay.county.reports import alerts
from relay.dicom.vocab import Role

router = APIRouter(prefix="/api/roster", tags=["roster"])


class OpenCriticalOut(BaseModel):
    delivery_id: int
    study_instance_uid: str
    site: str
    signed_at: datetime = Field(description="When the report went to the township (its delivery was created).")
    notified_at: datetime | None = Field(description="When the township's webhook accepted the alert.")
    escalated_at: datetime | None
    escalated_to: list[str] = Field(description="Usernames of the leads on duty then; empty with escalated_at "
                                    "set: escalated with no lead on duty.")


@router.get("/critical", response_model=list[OpenCriticalOut])
def open_critical(who: CountyStaffDep, session: SessionDep) -> list[OpenCriticalOut]:
    """Critical results (危急值) nobody at the township acknowledged yet, with their escalation;
    for administrators and readers who hold a lead line."""
    if who.role is not Role.ADMIN and not roster.holds_lead_line(session=session, username=who.username):
        raise Forbidden("open critical results are for administrators and the on-duty leads")
    return [OpenCriticalOut(delivery_id=d.id, study_instance_uid=s.study_uid, site=site, signed_at=d.created_at,
                            notified_at=d.critical_notified_at, escalated_at=d.escalated_at,
                            escalated_to=[n for n in d.escalated_to.split(",") if n])
            for d, s, site in alerts.open_critical(session=session)]


class EscalationAlertOut(BaseModel):
    delivery_id: int
    study_instance_uid: str
    site: str
    escalated_at: datetime


@router.get("/critical/alerts", response_model=list[EscalationAlertOut])
def my_escalation_alerts(who: CountyStaffDep, session: SessionDep, county: CountyDep) -> list[EscalationAlertOut]:
    """Escalated critical results (危急值) the township has not acknowledged that the caller must
    be told of: to the lead(s) it went to and every lead on duty now (administrators when no
    lead was on duty). Every portal page polls this and shows a banner with a sound and a
    desktop notification; an empty list for everyone else. Identifiers only."""
    found = alerts.escalations_for(session=session, username=who.username, admin=who.role is Role.ADMIN,
                                   at=now_utc(), zone=ZoneInfo(county.settings.timezone))
    return [EscalationAlertOut(delivery_id=d.id, study_instance_uid=s.study_uid, site=site,
                               escalated_at=d.escalated_at)
            for d, s, site in found if d.escalated_at is not None]

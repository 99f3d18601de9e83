"""Duty roster routes (值班表): its lines, this week's shifts, who is on duty now. The
critical results the on-duty lead answers for are under the same prefix, in
relay.county.reports.critical_endpoints.

Readers and administrators see the roster; only administrators change it. Times in and
out are the county's local time (``Settings.timezone``); instants carry their offset.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import AdminDep, CountyDep, PrincipalDep, SessionDep
from relay.county.auth.service import Principal
from relay.county.clock import now_utc
from relay.county.db.models import DutyShift, User
from relay.county.errors import Forbidden
from relay.county.reading import roster
from relay.dicom.vocab import Role

router = APIRouter(prefix="/api/roster", tags=["roster"])


def _not_technician(principal: PrincipalDep) -> Principal:
    if principal.role is Role.TECHNICIAN:
        raise Forbidden("the duty roster is for the county's readers and administrators")
    return principal


CountyStaffDep = Annotated[Principal, Depends(_not_technician)]


class ShiftIn(BaseModel):
    username: str
    weekday: int | None = Field(None, ge=0, le=6, description="Every week on this day: 0 = Monday … 6 = Sunday.")
    on_date: date | None = Field(None, description="Only on this date (instead of weekday).")
    start: time = Field(description='Local start, "08:00".')
    end: time = Field(description='Local end, "17:30"; at or before the start means the next day.')
    label: str = Field("", max_length=64, description="e.g. 白班, 夜班")
    leave: bool = Field(False, description="A dated leave line (请假): off duty for its span.")
    lead: bool = Field(False, description="Its reader is the on-duty lead (值班组长) for the span: "
                       "unacknowledged critical results are escalated to them.")


class ShiftOut(BaseModel):
    id: int
    username: str
    display_name: str
    weekday: int | None
    on_date: date | None
    start: str
    end: str
    overnight: bool
    label: str
    leave: bool
    lead: bool


class OccurrenceOut(BaseModel):
    shift_id: int
    username: str
    display_name: str
    label: str
    leave: bool
    lead: bool
    weekly: bool = Field(description="From a weekly line (deleting it ends it every week).")
    start: datetime
    end: datetime


class WeekOut(BaseModel):
    timezone: str
    week_start: date
    occurrences: list[OccurrenceOut]


class OnDutyOut(BaseModel):
    username: str
    display_name: str
    competences: str
    by_switch: bool = Field(description="On duty by the manual switch (PATCH /api/users/{name}).")
    lead: bool = Field(description="On duty as the lead (值班组长): a lead roster line covers the moment.")
    shift: OccurrenceOut | None = Field(description="The roster line that covers the moment, if any.")


class ReaderOut(BaseModel):
    username: str
    display_name: str
    competences: str
    on_duty_switch: bool


def _shift_out(shift: DutyShift, user: User) -> ShiftOut:
    return ShiftOut(id=shift.id, username=user.username, display_name=user.display_name, weekday=shift.weekday,
                    on_date=shift.on_date, start=shift.start_time.strftime("%H:%M"),
                    end=shift.end_time.strftime("%H:%M"), overnight=shift.end_time <= shift.start_time,
                    label=shift.label, leave=shift.leave, lead=shift.lead)


def _occurrence_out(o: roster.Occurrence, users: dict[int, User]) -> OccurrenceOut:
    user = users[o.shift.user_id]
    return OccurrenceOut(shift_id=o.shift.id, username=user.username, display_name=user.display_name,
                         label=o.shift.label, leave=o.shift.leave, lead=o.shift.lead, weekly=o.shift.weekday is not None,
                         start=o.start, end=o.end)


@router.get("/readers", response_model=list[ReaderOut])
def readers(_who: CountyStaffDep, session: SessionDep) -> list[ReaderOut]:
    """The readers a roster line can name (active radiologists)."""
    return [ReaderOut(username=u.username, display_name=u.display_name, competences=u.competences,
                      on_duty_switch=u.on_duty) for u in roster.active_readers(session=session)]


@router.get("/shifts", response_model=list[ShiftOut])
def list_shifts(_who: CountyStaffDep, session: SessionDep,
                since: Annotated[date | None, Query(description="Dated lines from this date on")] = None,
                ) -> list[ShiftOut]:
    """The roster's lines: weekly ones, then dated ones."""
    return [_shift_out(s, u) for s, u in roster.list_shifts(session=session, since=since)]


def _describe(out: ShiftOut) -> str:
    when = f"weekday {out.weekday}" if out.weekday is not None else f"date {out.on_date}"
    kind = "leave" if out.leave else "lead shift" if out.lead else "shift"
    return f"{kind} #{out.id} {when} {out.start}-{out.end} {out.label}".strip()


@router.post("/shifts", response_model=ShiftOut, status_code=201)
def create_shift(body: ShiftIn, admin: AdminDep, session: SessionDep, county: CountyDep,
                 request: Request) -> ShiftOut:
    """Add a line: weekly (``weekday``) or on one date (``on_date``), or a dated leave."""
    shift = roster.create_shift(session=session, principal=admin, username=body.username, weekday=body.weekday,
                                on_date=body.on_date, start=body.start, end=body.end, label=body.label,
                                leave=body.leave, lead=body.lead)
    user = session.get(User, shift.user_id)
    assert user is not None
    out = _shift_out(shift, user)
    audit(county, request, admin, Action.USER_UPDATE, object_type="user", object_id=user.username,
          detail=f"roster: added {_describe(out)}")
    return out


@router.delete("/shifts/{shift_id}", status_code=204, response_class=Response)
def delete_shift(shift_id: int, admin: AdminDep, session: SessionDep, county: CountyDep,
                 request: Request) -> Response:
    """Remove a line; studies its reader already holds stay theirs."""
    found = roster.get_shift(session=session, shift_id=shift_id)
    out = _shift_out(*found)
    roster.delete_shift(session=session, shift_id=shift_id)
    audit(county, request, admin, Action.USER_UPDATE, object_type="user", object_id=out.username,
          detail=f"roster: removed {_describe(out)}")
    return Response(status_code=204)


@router.get("/week", response_model=WeekOut)
def week(_who: CountyStaffDep, session: SessionDep, county: CountyDep,
         start: Annotated[date | None, Query(description="Monday of the week; default this week")] = None,
         ) -> WeekOut:
    """Every shift of one week (Monday to Sunday, local time), leave lines included."""
    zone = ZoneInfo(county.settings.timezone)
    today = now_utc().astimezone(zone).date()
    monday = start or today - timedelta(days=today.weekday())
    begin = datetime.combine(monday, time(0), tzinfo=zone)
    shifts = roster.reader_shifts(session)
    users = {u.id: u for u in session.execute(select(User).where(User.id.in_({s.user_id for s in shifts}))).scalars()}
    found = [o for o in roster.occurrences(shifts, start=begin, end=begin + timedelta(days=7), zone=zone)
             if o.start >= begin]  # a night begun on the Sunday before belongs to last week
    return WeekOut(timezone=county.settings.timezone, week_start=monday,
                   occurrences=[_occurrence_out(o, users) for o in found])


@router.get("/on-duty", response_model=list[OnDutyOut])
def on_duty_now(_who: CountyStaffDep, session: SessionDep, county: CountyDep,
                at: Annotated[datetime | None, Query(description="The moment (ISO 8601 with offset); default now")] = None,
                ) -> list[OnDutyOut]:
    """Who automatic assignment gives studies to at that moment, and why."""
    zone = ZoneInfo(county.settings.timezone)
    moment = now_utc() if at is None else at if at.tzinfo else at.replace(tzinfo=zone)  # naive: local time
    found = roster.on_duty(session=session, at=moment, zone=zone)
    users = {d.user.id: d.user for d in found}
    return [OnDutyOut(username=d.user.username, display_name=d.user.display_name, competences=d.user.competences,
                      by_switch=d.by_switch, lead=d.lead, shift=_occurrence_out(d.shift, users) if d.shift else None)
            for d in found]

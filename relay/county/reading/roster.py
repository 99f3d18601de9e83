"""The duty roster (值班表): who is on duty when, in the county's own time zone.

A county administrator keeps two kinds of lines per reader, both in local time:

- **weekly** lines (every Monday 08:00–17:30 白班, every Friday 17:30–08:00 夜班), the
  usual rota, written once;
- **dated** lines for one day (a swap, an extra night), and dated **leave** lines
  (请假/调休) that take a reader off for their span even where a weekly line puts them on.

An end at or before the start is on the next day, so a night shift is one line.

How it combines with the manual switch (``User.on_duty``, PATCH /api/users/{name}): a
reader is on duty at a moment when the switch is on (a standing override, e.g. someone
covering without a roster line), or when a roster line covers the moment and no leave
line does. The switch off means "follow the roster". Automatic assignment asks this
module, with the round's "now", so a shift boundary is crossed by the clock alone.

A **lead** line (值班组长) also makes its reader the county's on-duty lead for its span:
critical results nobody at the township acknowledged are escalated to them. Only a
roster line makes a lead; the manual switch does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.auth.service import Principal

from relay.county.clock import now_utc
from relay.county.db.models import DutyShift, User
from relay.county.errors import BadRequest, NotFound
from relay.dicom.vocab import Role


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One shift line made concrete: from ``start`` to ``end`` (aware datetimes)."""

    shift: DutyShift
    start: datetime
    end: datetime

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


def _span(shift: DutyShift, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, shift.start_time, tzinfo=zone)
    end_day = day if shift.end_time > shift.start_time else day + timedelta(days=1)
    return start, datetime.combine(end_day, shift.end_time, tzinfo=zone)


def _falls_on(shift: DutyShift, day: date) -> bool:
    return shift.on_date == day if shift.weekday is None else shift.weekday == day.weekday()


def occurrences(shifts: list[DutyShift], *, start: datetime, end: datetime, zone: ZoneInfo) -> list[Occurrence]:
    """Every occurrence of ``shifts`` overlapping [start, end), in time order."""
    first = start.astimezone(zone).date() - timedelta(days=1)  # a night shift begun the day before
    days = (end.astimezone(zone).date() - first).days + 1
    found = []
    for n in range(days):
        day = first + timedelta(days=n)
        for shift in shifts:
            if _falls_on(shift, day):
                s, e = _span(shift, day, zone)
                if s < end and e > start:
                    found.append(Occurrence(shift, s, e))
    return sorted(found, key=lambda o: (o.start, o.shift.user_id, o.shift.id))


def covering(shifts: list[DutyShift], *, at: datetime, zone: ZoneInfo) -> dict[int, Occurrence]:
    """Readers (by user id) whom a roster line puts on duty at ``at``, with that line;
    a leave line covering ``at`` takes its reader off."""
    now_on = [o for o in occurrences(shifts, start=at, end=at + timedelta(microseconds=1), zone=zone) if o.covers(at)]
    on_leave = {o.shift.user_id for o in now_on if o.shift.leave}
    return {o.shift.user_id: o for o in now_on if not o.shift.leave and o.shift.user_id not in on_leave}


@dataclass(frozen=True, slots=True)
class OnDuty:
    """A reader on duty at a moment, and why: the manual switch or a roster line."""

    user: User
    by_switch: bool
    shift: Occurrence | None

    @property
    def lead(self) -> bool:
        """On duty as the lead: the covering roster line is a lead line."""
        return self.shift is not None and self.shift.shift.lead


def reader_shifts(session: Session) -> list[DutyShift]:
    """Every roster line of an active reader."""
    return list(session.execute(
        select(DutyShift).join(User, User.id == DutyShift.user_id)
        .where(User.role == Role.RADIOLOGIST.value, User.disabled_at.is_(None))
        .order_by(DutyShift.id)).scalars())


def active_readers(*, session: Session) -> list[User]:
    """Radiologists whose login is not disabled, by name."""
    return list(session.execute(select(User).where(User.role == Role.RADIOLOGIST.value, User.disabled_at.is_(None))
                                .order_by(User.username)).scalars())


def on_duty(*, session: Session, at: datetime, zone: ZoneInfo) -> list[OnDuty]:
    """Active readers on duty at ``at`` (switch on, or a roster line and no leave), by name."""
    by_roster = covering(reader_shifts(session), at=at, zone=zone)
    return [OnDuty(u, u.on_duty, by_roster.get(u.id)) for u in active_readers(session=session)
            if u.on_duty or u.id in by_roster]


def leads_on_duty(*, session: Session, at: datetime, zone: ZoneInfo) -> list[User]:
    """Active readers on duty as the lead at ``at`` (a lead line covers it, no leave), by name."""
    return [d.user for d in on_duty(session=session, at=at, zone=zone) if d.lead]


def holds_lead_line(*, session: Session, username: str) -> bool:
    """Whether the reader has any lead line on the roster (a lead sees the open critical results)."""
    return session.execute(select(DutyShift.id).join(User, User.id == DutyShift.user_id)
                           .where(User.username == username, DutyShift.lead.is_(True)).limit(1)).first() is not None


def list_shifts(*, session: Session, since: date | None = None) -> list[tuple[DutyShift, User]]:
    """Roster lines with their reader: weekly ones, then dated ones from ``since`` on."""
    stmt = select(DutyShift, User).join(User, User.id == DutyShift.user_id)
    if since is not None:
        stmt = stmt.where((DutyShift.on_date.is_(None)) | (DutyShift.on_date >= since))
    rows: list[tuple[DutyShift, User]] = [(r[0], r[1]) for r in session.execute(stmt).all()]
    return sorted(rows, key=lambda r: (r[0].on_date is not None, r[0].on_date or date.min,
                                       r[0].weekday or 0, r[0].start_time, r[1].username))


def create_shift(*, session: Session, principal: Principal, username: str, weekday: int | None,
                 on_date: date | None, start: time, end: time, label: str = "",
                 leave: bool = False, lead: bool = False) -> DutyShift:
    """Add a roster line for a reader: weekly (``weekday``) or on one date (``on_date``)."""
    if (weekday is None) == (on_date is None):
        raise BadRequest("give either weekday (0 = Monday … 6 = Sunday) or date, not both")
    if weekday is not None and not 0 <= weekday <= 6:
        raise BadRequest("weekday is 0 (Monday) to 6 (Sunday)")
    if leave and on_date is None:
        raise BadRequest("leave is for a date; to end a weekly shift, delete it")
    if leave and lead:
        raise BadRequest("a leave line cannot make its reader the lead")
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}")
    if user.role != Role.RADIOLOGIST.value:
        raise BadRequest("only readers (radiologists) are on the duty roster")
    shift = DutyShift(user_id=user.id, weekday=weekday, on_date=on_date, start_time=start.replace(tzinfo=None),
                      end_time=end.replace(tzinfo=None), label=label.strip(), leave=leave, lead=lead,
                      created_at=now_utc(),
                      created_by=principal.username)
    session.add(shift)
    session.commit()
    return shift


def get_shift(*, session: Session, shift_id: int) -> tuple[DutyShift, User]:
    """One roster line with its reader, or NotFound."""
    row = session.execute(select(DutyShift, User).join(User, User.id == DutyShift.user_id)
                          .where(DutyShift.id == shift_id)).one_or_none()
    if row is None:
        raise NotFound(f"no roster line {shift_id}")
    return row[0], row[1]


def delete_shift(*, session: Session, shift_id: int) -> None:
    """Remove a roster line (the reader's studies already assigned stay theirs)."""
    shift = session.get(DutyShift, shift_id)
    if shift is None:
        raise NotFound(f"no roster line {shift_id}")
    session.delete(shift)
    session.commit()

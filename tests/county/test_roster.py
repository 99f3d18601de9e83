"""The duty roster (值班表): automatic assignment follows it as the clock crosses shift
boundaries; its API for administrators and readers. "Now" is injected, never slept for."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.reading import roster
from relay.county.reading.assign import assign_round
from relay.dicom.vocab import Role
from tests.county.test_assign import SETTINGS, holders, reader, study
from tests.county.test_reading import principal
from tests.county.test_reports import login
from tests.factories import make_site

ZONE = ZoneInfo(SETTINGS.timezone)  # Asia/Shanghai
MONDAY, TUESDAY = 0, 1


def local(day: int, hh: int, mm: int = 0) -> datetime:
    """A moment in the week of Monday 2026-11-23, county time."""
    return datetime(2026, 11, 23 + day, hh, mm, tzinfo=ZONE)


def line(county, username: str, *, weekday: int | None = None, on_date=None, start: str, end: str,
         label: str = "", leave: bool = False) -> int:
    admin = principal(county, f"admin-{username}-{start}-{label}", Role.ADMIN)
    with session_scope(county.sessions) as s:
        shift = roster.create_shift(session=s, principal=admin, username=username, weekday=weekday, on_date=on_date,
                                    start=datetime.strptime(start, "%H:%M").time(),
                                    end=datetime.strptime(end, "%H:%M").time(), label=label, leave=leave)
        return shift.id


def round_at(county, at: datetime) -> tuple[int, int]:
    with county.sessions() as s:
        return assign_round(session=s, settings=SETTINGS, now=at)


def test_assignment_follows_the_roster_across_the_evening_shift_change(county):
    site, _ = make_site(county)
    reader(county, "dr.day", on_duty=False)
    reader(county, "dr.night", on_duty=False)
    line(county, "dr.day", weekday=MONDAY, start="08:00", end="17:30", label="白班")
    line(county, "dr.night", weekday=MONDAY, start="17:30", end="08:00", label="夜班")

    before = study(county, site, "CT")
    assert round_at(county, local(MONDAY, 17, 29)) == (1, 0)
    after = study(county, site, "CT")
    assert round_at(county, local(MONDAY, 17, 30)) == (1, 0)  # the boundary itself belongs to the night
    assert holders(county) == {before: "dr.day", after: "dr.night"}


def test_a_night_shift_runs_past_midnight_and_ends_in_the_morning(county):
    site, _ = make_site(county)
    reader(county, "dr.night", on_duty=False)
    reader(county, "dr.day", on_duty=False)
    line(county, "dr.night", weekday=MONDAY, start="17:30", end="08:00", label="夜班")
    line(county, "dr.day", weekday=TUESDAY, start="08:00", end="17:30", label="白班")

    small_hours = study(county, site, "DX")
    assert round_at(county, local(TUESDAY, 7, 45)) == (1, 0)  # Monday's night, on Tuesday
    morning = study(county, site, "DX")
    assert round_at(county, local(TUESDAY, 8, 0)) == (1, 0)
    assert holders(county) == {small_hours: "dr.night", morning: "dr.day"}


def test_a_reader_off_duty_gets_nothing_new_and_keeps_what_they_hold(county):
    site, _ = make_site(county)
    reader(county, "dr.a", on_duty=False)
    line(county, "dr.a", weekday=MONDAY, start="08:00", end="17:30", label="白班")
    held = study(county, site, "CT")
    assert round_at(county, local(MONDAY, 10)) == (1, 0)
    late = study(county, site, "CT")
    assert round_at(county, local(MONDAY, 18)) == (0, 0)  # nobody on duty at 18:00
    assert holders(county) == {held: "dr.a", late: None}


def test_a_leave_line_takes_a_rostered_reader_off_and_the_switch_puts_one_on(county):
    site, _ = make_site(county)
    reader(county, "dr.sick", on_duty=False)
    reader(county, "dr.cover", on_duty=True)  # the manual switch: on duty without a roster line
    line(county, "dr.sick", weekday=MONDAY, start="08:00", end="17:30", label="白班")
    line(county, "dr.sick", on_date=local(MONDAY, 0).date(), start="00:00", end="00:00", label="病假", leave=True)
    uids = [study(county, site, "CT") for _ in range(2)]
    assert round_at(county, local(MONDAY, 9)) == (2, 0)
    assert holders(county) == {u: "dr.cover" for u in uids}
    with county.sessions() as s:
        assert [d.user.username for d in roster.on_duty(session=s, at=local(MONDAY + 7, 9), zone=ZONE)] == \
            ["dr.cover", "dr.sick"]  # the leave was for one date only


def test_an_administrator_keeps_the_roster_and_anyone_at_the_county_sees_who_is_on_duty(county):
    principal(county, "dr.wang")
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        make_site(county, "qingshan")
        tech = login(client, county, "tech", Role.TECHNICIAN, site="qingshan")
        night = {"username": "dr.wang", "weekday": MONDAY, "start": "17:30", "end": "08:00", "label": "夜班"}
        r = client.post("/api/roster/shifts", json=night, headers=admin)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["overnight"] is True and created["start"] == "17:30" and created["end"] == "08:00"
        assert client.post("/api/roster/shifts", json=night, headers=dr).status_code == 403
        both = {**night, "on_date": "2026-11-24"}
        assert client.post("/api/roster/shifts", json=both, headers=admin).status_code == 400

        at = local(TUESDAY, 2).isoformat()
        r = client.get("/api/roster/on-duty", params={"at": at}, headers=dr)
        assert r.status_code == 200
        (who,) = r.json()
        assert who["username"] == "dr.wang" and who["by_switch"] is False
        assert who["shift"]["label"] == "夜班"
        assert datetime.fromisoformat(who["shift"]["start"]) == local(MONDAY, 17, 30)
        assert client.get("/api/roster/on-duty", params={"at": local(TUESDAY, 9).isoformat()},
                          headers=dr).json() == []
        assert client.get("/api/roster/on-duty", headers=tech).status_code == 403

        week = client.get("/api/roster/week", params={"start": "2026-11-23"}, headers=dr).json()
        assert week["timezone"] == "Asia/Shanghai" and len(week["occurrences"]) == 1
        assert [s["id"] for s in client.get("/api/roster/shifts", headers=dr).json()] == [created["id"]]

        assert client.delete(f"/api/roster/shifts/{created['id']}", headers=dr).status_code == 403
        assert client.delete(f"/api/roster/shifts/{created['id']}", headers=admin).status_code == 204
        assert client.get("/api/roster/shifts", headers=dr).json() == []
        assert client.delete(f"/api/roster/shifts/{created['id']}", headers=admin).status_code == 404
        events = client.get("/api/audit", params={"action": "user.update"}, headers=admin).json()
        details = [e["detail"] for e in (events["events"] if isinstance(events, dict) else events)]
        assert any(d.startswith(f"roster: added shift #{created['id']} weekday 0 17:30-08:00 夜班") for d in details)
        assert any(d.startswith(f"roster: removed shift #{created['id']}") for d in details)
        paths = client.get("/openapi.json", headers=admin).json()["paths"]  # administrators only
        assert {"/api/roster/shifts", "/api/roster/shifts/{shift_id}", "/api/roster/week",
                "/api/roster/on-duty"} <= set(paths)


def test_the_roster_assigns_on_sqlite_as_relay_up_runs_it(tmp_path):
    from relay.config import Settings
    from relay.county.context import County
    from relay.county.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    embedded = County(Settings(data_dir=tmp_path / "var", database_url=url, broker_url=None))
    try:
        site, _ = make_site(embedded)
        reader(embedded, "dr.night", on_duty=False)
        line(embedded, "dr.night", weekday=MONDAY, start="17:30", end="08:00", label="夜班")
        uid = study(embedded, site, "CT")
        assert round_at(embedded, local(TUESDAY, 9)) == (0, 0)  # the night is over
        assert round_at(embedded, local(TUESDAY, 2)) == (1, 0)  # Monday's night, past midnight
        assert holders(embedded) == {uid: "dr.night"}
        with TestClient(create_app(embedded)) as client:
            dr = login(client, embedded, "dr.li", Role.RADIOLOGIST)
            (who,) = client.get("/api/roster/on-duty", params={"at": local(MONDAY, 23).isoformat()}, headers=dr).json()
            assert who["username"] == "dr.night" and who["shift"]["label"] == "夜班"
    finally:
        embedded.close()


def test_a_lead_line_round_trips_and_on_duty_says_who_the_lead_is(county):
    principal(county, "dr.wang")
    principal(county, "dr.li")
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        lead = {"username": "dr.wang", "weekday": MONDAY, "start": "08:00", "end": "17:30", "label": "白班", "lead": True}
        plain = {"username": "dr.li", "weekday": MONDAY, "start": "08:00", "end": "17:30", "label": "白班"}
        created = client.post("/api/roster/shifts", json=lead, headers=admin).json()
        assert created["lead"] is True
        assert client.post("/api/roster/shifts", json=plain, headers=admin).json()["lead"] is False
        leave = {**lead, "weekday": None, "on_date": "2026-11-23", "leave": True}
        assert client.post("/api/roster/shifts", json=leave, headers=admin).status_code == 400

        assert {s["username"]: s["lead"] for s in client.get("/api/roster/shifts", headers=admin).json()} == \
            {"dr.wang": True, "dr.li": False}
        on = client.get("/api/roster/on-duty", params={"at": local(MONDAY, 9).isoformat()}, headers=admin).json()
        assert {d["username"]: d["lead"] for d in on} == {"dr.wang": True, "dr.li": False}
        week = client.get("/api/roster/week", params={"start": "2026-11-23"}, headers=admin).json()
        assert [o["lead"] for o in week["occurrences"] if o["username"] == "dr.wang"] == [True]

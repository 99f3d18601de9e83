"""Heartbeats from edges and the administrator's fleet view, on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from relay.config import Settings
from relay.county.app import create_app
from relay.county.edges.service import fleet
from relay.dicom.vocab import Role
from relay.edge.heartbeat import GoodputMeter, build_heartbeat, send_heartbeat
from tests.factories import make_site, make_user
from tests.county.test_public_surface import scrape_text


def admin_headers(client: TestClient, county, role: Role = Role.ADMIN) -> dict[str, str]:
    password = make_user(county, f"u-{role.value}", role)
    token = client.post("/api/auth/token", data={"username": f"u-{role.value}", "password": password})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_an_edge_heartbeat_reaches_the_fleet_view_with_its_clock_offset(county, tmp_path):
    _, token = make_site(county, "qingshan")
    with TestClient(create_app(county)) as client:
        edge = Settings(data_dir=tmp_path / "edge", edge_site_token=token)
        body = build_heartbeat(edge, GoodputMeter())
        body["edge_time"] = (datetime.now(UTC) - timedelta(seconds=300)).isoformat()
        client.headers["Authorization"] = f"Bearer {token}"
        offset = send_heartbeat(client, body)
        client.headers.pop("Authorization")
        edges = client.get("/api/edges", headers=admin_headers(client, county)).json()
    assert offset is not None and 299 < offset < 330
    (row,) = edges
    assert row["site"] == "qingshan" and row["silent"] is False
    assert row["spool_instances"] == 0 and row["disk_free_bytes"] > 0


def test_a_site_that_never_beat_or_went_quiet_is_silent(county):
    make_site(county, "never")
    with county.sessions() as s:
        assert [e.silent for e in fleet(session=s)] == [True]
        assert [e.silent for e in fleet(session=s, now=datetime.now(UTC) + timedelta(minutes=11))] == [True]


def test_the_fleet_view_is_for_administrators_only(county):
    with TestClient(create_app(county)) as client:
        assert client.get("/api/edges", headers=admin_headers(client, county, Role.RADIOLOGIST)).status_code == 403
        assert client.get("/api/edges").status_code == 401


def test_goodput_is_the_delivered_bytes_per_second_between_readings():
    meter = GoodputMeter()
    assert meter.update(1000, 10.0) is None
    assert meter.update(3000, 12.0) == 1000.0


def _beat(county, site: str, *, silent_for: timedelta, oldest_unsent_s: float | None) -> None:
    from relay.county.db.models import EdgeHealth, Site

    with county.sessions() as s:
        site_id = s.query(Site.id).filter(Site.name == site).scalar()
        seen = datetime.now(UTC) - silent_for
        s.add(EdgeHealth(site_id=site_id, received_at=seen, edge_time=seen, clock_offset_s=0.0, spool_instances=3,
                         spool_bytes=100, oldest_unsent_age_s=oldest_unsent_s, version="1", last_error=""))
        s.commit()


def test_the_fleet_flags_an_edge_silent_over_10_minutes_or_with_an_old_spool(county):
    for name in ("fine", "quiet", "stuck", "never"):
        make_site(county, name)
    _beat(county, "fine", silent_for=timedelta(seconds=30), oldest_unsent_s=20.0)
    _beat(county, "quiet", silent_for=timedelta(minutes=11), oldest_unsent_s=None)
    _beat(county, "stuck", silent_for=timedelta(seconds=30), oldest_unsent_s=2 * 3600.0)
    with TestClient(create_app(county)) as client:
        edges = {e["site"]: e for e in client.get("/api/edges", headers=admin_headers(client, county)).json()}
        body = scrape_text(client, county)
    assert {name: e["alarms"] for name, e in edges.items()} == {
        "fine": [], "quiet": ["silent"], "stuck": ["spool_stale"], "never": ["silent"]}
    assert edges["stuck"]["spool_stale"] and not edges["quiet"]["spool_stale"]
    assert 'relay_edge_alarm{kind="spool_stale",site="stuck"} 1.0' in body
    assert 'relay_edge_alarm{kind="silent",site="quiet"} 1.0' in body
    assert 'relay_edge_alarm{kind="silent",site="fine"} 0.0' in body


def test_the_spool_age_threshold_is_a_setting(county):
    make_site(county, "slow")
    _beat(county, "slow", silent_for=timedelta(seconds=5), oldest_unsent_s=20 * 60.0)
    with county.sessions() as s:
        assert fleet(session=s)[0].alarms == []
        assert fleet(session=s, spool_alarm_after=timedelta(minutes=15))[0].alarms == ["spool_stale"]

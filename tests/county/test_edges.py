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

"""The `relay` command's contracts: users and sites created from the shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.config import Settings
from relay.county.context import County
from relay.county.db.models import User
from reader_portal.app import create_app
from tests.processes import base_env


def relay(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `relay ARGS` in ``tmp_path`` on the embedded defaults (./var there)."""
    return subprocess.run([sys.executable, "-m", "relay", *args], input=stdin, text=True,
                          capture_output=True, cwd=tmp_path, env=base_env(), timeout=120)


def test_users_create_reads_the_password_from_stdin_and_the_login_works(tmp_path):
    assert relay(tmp_path, "sites", "create", "qingshan").returncode == 0
    made = relay(tmp_path, "users", "create", "li.tech", "--role", "technician", "--site", "qingshan",
                 "--password-stdin", stdin="s3cret-pass\n")
    assert made.returncode == 0, made.stderr
    county = County(Settings(data_dir=tmp_path / "var"))
    with TestClient(create_app(county)) as client:
        r = client.post("/api/auth/token", data={"username": "li.tech", "password": "s3cret-pass"})
        assert r.status_code == 200
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert me.json()["role"] == "technician" and me.json()["site_id"] is not None
    county.close()


def test_users_create_sets_a_readers_modalities_and_body_regions(tmp_path):
    made = relay(tmp_path, "users", "create", "dr.neuro", "--role", "radiologist", "--competences", "ct,mr",
                 "--body-regions", "head, Neck,brain", "--password-stdin", stdin="s3cret-pass\n")
    assert made.returncode == 0, made.stderr
    county = County(Settings(data_dir=tmp_path / "var"))
    with county.sessions() as s:
        user = s.execute(select(User).where(User.username == "dr.neuro")).scalar_one()
        assert (user.competences, user.body_regions) == ("CT,MR", "HEAD,NECK")  # BRAIN is HEAD
    county.close()


def test_a_technician_without_a_site_is_refused_with_a_reason(tmp_path):
    made = relay(tmp_path, "users", "create", "x", "--role", "technician", "--password-stdin",
                 stdin="s3cret-pass\n")
    assert made.returncode == 1 and "site" in made.stderr


def test_a_password_on_the_command_line_is_not_accepted(tmp_path):
    made = relay(tmp_path, "users", "create", "x", "--role", "admin")
    assert made.returncode == 2 and "--password-stdin" in made.stderr


def test_sites_create_prints_a_credential_the_ingest_accepts(tmp_path):
    made = relay(tmp_path, "sites", "create", "qingshan")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    county = County(Settings(data_dir=tmp_path / "var"))
    with TestClient(create_app(county)) as client:
        r = client.post("/api/ingest/instances", content=b"x",
                        headers={"Authorization": f"Bearer {token}", "X-Relay-SHA256": "0" * 64})
        assert r.status_code == 422  # authenticated, then refused for the bad body
        r = client.post("/api/ingest/instances", content=b"x",
                        headers={"Authorization": "Bearer site_nope", "X-Relay-SHA256": "0" * 64})
        assert r.status_code == 401
    county.close()
    assert relay(tmp_path, "sites", "create", "qingshan").returncode == 1


def test_a_revoked_site_credential_is_refused(tmp_path):
    token = relay(tmp_path, "sites", "create", "qingshan").stdout.strip().splitlines()[-1]
    assert relay(tmp_path, "sites", "revoke", "qingshan").returncode == 0
    assert "revoked" in relay(tmp_path, "sites", "list").stdout
    county = County(Settings(data_dir=tmp_path / "var"))
    with TestClient(create_app(county)) as client:
        r = client.post("/api/ingest/instances", content=b"x",
                        headers={"Authorization": f"Bearer {token}", "X-Relay-SHA256": "0" * 64})
        assert r.status_code == 403
    county.close()


# --- `relay up`'s port check ---------------------------------------------------------
def _up_settings(tmp_path: Path, port: int) -> Settings:
    return Settings(data_dir=tmp_path / "var", county_host="127.0.0.1", county_port=port,
                    edge_host="127.0.0.1", edge_port=port, edge_status_port=-1)


def _time_wait_port() -> int:
    """A loopback port left with a TIME_WAIT socket and no listener, as a `relay up`
    just stopped leaves it: the server side closes its accepted connection first."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the side that closes first keeps TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


def _binds_without_reuse(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_reports_a_port_with_only_time_wait_sockets_as_free(tmp_path):
    from relay.up import busy_ports

    port = _time_wait_port()
    assert not _binds_without_reuse(port)  # the TIME_WAIT socket is really there
    assert busy_ports(_up_settings(tmp_path, port)) == []


def test_up_reports_a_port_with_a_listener_as_busy(tmp_path):
    import socket

    from relay.up import busy_ports

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = int(listener.getsockname()[1])
        assert busy_ports(_up_settings(tmp_path, port)) == [
            f"county API 127.0.0.1:{port}", f"edge DICOM 127.0.0.1:{port}"]

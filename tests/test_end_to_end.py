"""A study travels from a modality (DCMTK storescu) through the edge to the county worklist.

Every part is a real process: `relay edge`, `relay county`, `relay worker`, or all of
them under `relay up --demo`; PostgreSQL, RabbitMQ and SeaweedFS are the real servers.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from relay.config import Settings
from relay.county.context import County
from relay.county.db.models import Instance
from relay.dicom.vocab import Role
from tests.conftest import SAMPLES
from tests.edge.techpage import log_in
from tests.factories import make_site, make_user
from tests.processes import RelayProcess, base_env, wait_for
from tests.servers import free_port

WORKLIST_TIMEOUT_S = 60.0


def storescu(port: int, *paths: Path, calling_ae: str = "MODALITY1") -> subprocess.CompletedProcess[str]:
    """DCMTK's storescu, as a modality sends: every file, recursively, one association.

    ``-xr`` proposes RLE Lossless beside the uncompressed syntaxes: storescu picks
    network syntaxes from its -x options, not from the files, and without it cannot
    send the RLE sample at all (it does not transcode to uncompressed).
    """
    return subprocess.run(
        ["storescu", "-xr", "-aet", calling_ae, "-aec", "RELAY_EDGE", "+sd", "+r", "+sp", "*.dcm",
         "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True, text=True, timeout=120, env=base_env())


def echoscu(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aec", "RELAY_EDGE", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30, env=base_env())


def token(base: str, username: str, password: str) -> str:
    r = httpx.post(f"{base}/api/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


def worklist(base: str, bearer: str) -> list[dict[str, str]]:
    r = httpx.get(f"{base}/api/worklist", headers={"Authorization": f"Bearer {bearer}"}, timeout=5)
    r.raise_for_status()
    return list(r.json())


def expected_studies(samples: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    """study UID -> (patient name, patient ID), as the manifest says they must arrive."""
    return {s["study_instance_uid"]: (s["patient_name"], s["patient_id"]) for s in samples}


def arrived(base: str, bearer: str, samples: list[dict[str, str]]) -> bool:
    got = {i["study_instance_uid"]: (i["patient_name"], i["patient_id"]) for i in worklist(base, bearer)}
    return expected_studies(samples).items() <= got.items()


@contextmanager
def launch_relay(tmp_path: Path, settings: Settings, county: County, **extra: str) -> Iterator[dict[str, Any]]:
    """Edge, county API and worker as separate processes on PostgreSQL, RabbitMQ and S3."""
    _, site_token = make_site(county, "qingshan")
    county_port, edge_port, page_port = free_port(), free_port(), free_port()
    env = base_env(data_dir=str(tmp_path / "var"), database_url=settings.resolved_database_url,
                   broker_url=settings.resolved_broker_url, store_url=settings.resolved_store_url,
                   queue_prefix=settings.queue_prefix, county_port=str(county_port),
                   edge_port=str(edge_port), edge_site="qingshan", edge_site_token=site_token,
                   county_url=f"http://127.0.0.1:{county_port}", edge_status_port=str(page_port), **extra)
    procs = [RelayProcess(name, args, env=env, cwd=tmp_path, logdir=tmp_path) for name, args in
             [("county", ["county", "--no-migrate"]), ("worker", ["worker", "--concurrency", "1"]),
              ("edge", ["edge"])]]
    base = f"http://127.0.0.1:{county_port}"
    try:
        wait_for("county API", lambda: httpx.get(f"{base}/healthz").status_code == 200,
                 timeout=30, procs=procs)
        wait_for("edge C-ECHO", lambda: echoscu(edge_port).returncode == 0, timeout=30, procs=procs)
        yield {"base": base, "edge_port": edge_port, "procs": procs, "spool": tmp_path / "var" / "edge",
               "page": f"http://127.0.0.1:{page_port}"}
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def relay_on_servers(tmp_path: Path, settings: Settings, county: County) -> Iterator[dict[str, Any]]:
    with launch_relay(tmp_path, settings, county) as relay:
        yield relay


def test_storescu_to_the_edge_puts_every_study_on_the_worklist_with_exact_names(
    relay_on_servers, county, samples, amqp_url
):
    base, port = relay_on_servers["base"], relay_on_servers["edge_port"]
    password = make_user(county, "reader1", Role.RADIOLOGIST)
    events = _listen_for_study_events(amqp_url)
    sent = storescu(port, SAMPLES)
    assert sent.returncode == 0, sent.stderr
    bearer = token(base, "reader1", password)
    wait_for("every sample study on the worklist with exact names",
             lambda: arrived(base, bearer, samples), timeout=WORKLIST_TIMEOUT_S,
             procs=relay_on_servers["procs"])
    items = {i["study_instance_uid"]: i for i in worklist(base, bearer)}
    assert {i["site"] for i in items.values()} == {"qingshan"}
    assert {i["state"] for i in items.values()} == {"queued"}
    arrived_events: set[str] = set()

    def announced() -> bool:
        while (msg := events.basic_get(events.queue_name, auto_ack=True))[0] is not None:
            arrived_events.add(json.loads(msg[2])["study_instance_uid"])
        return set(items) <= arrived_events  # the exchange is shared: other runs may publish too

    wait_for("the worker to publish study.arrived for every study", announced, timeout=30,
             procs=relay_on_servers["procs"])
    events.connection.close()
    admin = token(base, "boss", make_user(county, "boss", Role.ADMIN))

    def heard() -> bool:
        fleet = httpx.get(f"{base}/api/edges", headers={"Authorization": f"Bearer {admin}"}).json()
        return [(e["site"], e["silent"]) for e in fleet] == [("qingshan", False)]

    wait_for("the edge's heartbeat in the fleet view", heard, timeout=30, procs=relay_on_servers["procs"])


def _listen_for_study_events(amqp_url: str) -> Any:
    """A private queue on the events exchange, bound before anything is sent."""
    import pika

    from relay.county.events.publisher import EXCHANGE

    channel = pika.BlockingConnection(pika.URLParameters(amqp_url)).channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_name = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(channel.queue_name, EXCHANGE, routing_key="study.arrived")
    return channel


def test_the_county_holds_exactly_the_bytes_the_edge_acknowledged(relay_on_servers, county, samples):
    sent = storescu(relay_on_servers["edge_port"], SAMPLES)
    assert sent.returncode == 0, sent.stderr
    journal = Path(relay_on_servers["spool"]) / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        acknowledged = dict(db.execute("SELECT sop_uid, sha256 FROM instances").fetchall())
    assert set(acknowledged) == {s["sop_instance_uid"] for s in samples}

    def all_held() -> bool:
        with county.sessions() as s:
            return len(s.execute(select(Instance.id)).all()) == len(acknowledged)

    wait_for("every acknowledged instance at the county", all_held, timeout=WORKLIST_TIMEOUT_S,
             procs=relay_on_servers["procs"])
    with county.sessions() as s:
        held = {i.sop_uid: i for i in s.execute(select(Instance)).scalars()}
    assert {uid: i.sha256 for uid, i in held.items()} == acknowledged
    for inst in held.values():
        assert hashlib.sha256(county.store.get(inst.object_key)).hexdigest() == inst.sha256


def test_relay_up_demo_runs_everything_on_embedded_defaults_and_stops_cleanly(tmp_path, samples):
    county_port, edge_port = free_port(), free_port()
    env = base_env(county_port=str(county_port), edge_port=str(edge_port))
    up = RelayProcess("up", ["up", "--demo"], env=env, cwd=tmp_path, logdir=tmp_path)
    base = f"http://127.0.0.1:{county_port}"
    try:
        wait_for("relay up --demo to print the logins", lambda: "logins:" in up.log(),
                 timeout=90, procs=[up])
        logins = json.loads((tmp_path / "var" / "demo-logins.json").read_text())
        reader = next(u for u in logins if u["role"] == "radiologist")
        bearer = token(base, reader["username"], reader["password"])
        sent = storescu(edge_port, SAMPLES)  # a second send: duplicates, harmless
        assert sent.returncode == 0, sent.stderr
        wait_for("the demo studies on the worklist", lambda: arrived(base, bearer, samples),
                 timeout=WORKLIST_TIMEOUT_S, procs=[up])
        assert len(worklist(base, bearer)) == len(expected_studies(samples))
        assert (tmp_path / "var" / "county.db").exists()
        tech = next(u for u in logins if u["role"] == "technician")
        with httpx.Client(base_url=f"http://127.0.0.1:{env['RELAY_EDGE_STATUS_PORT']}") as page:
            wait_for("the demo technician able to log in to the technician's page",
                     lambda: log_in(page, tech["username"], tech["password"]).status_code == 303,
                     timeout=60, procs=[up])
            assert "今日检查" in page.get("/").text
    finally:
        code = up.stop(signal.SIGINT, timeout=40)
    assert code == 0, up.log()[-3000:]
    assert echoscu(edge_port).returncode != 0, "the edge still answers after relay up stopped"


def test_relay_up_refuses_to_start_when_its_ports_are_taken(tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env = base_env(county_port=str(squatter.getsockname()[1]), edge_port=str(free_port()))
        up = RelayProcess("up", ["up"], env=env, cwd=tmp_path, logdir=tmp_path)
        code = up.proc.wait(timeout=60)
    assert code == 2 and "already in use" in up.log()

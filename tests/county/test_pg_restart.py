"""PostgreSQL restarted mid-ingest (issue 13, row 9): committed rows lost 0, the edges' retries succeed.

A real `relay county` process ingests a stream of instances from a sender that behaves like
the edge (an instance is done only on a 200; anything else is retried with backoff). The
test's own PostgreSQL is restarted twice during the stream: once cleanly, once killed
without a checkpoint (recovery from the WAL, as after a crash). Every instance that was
answered 200 must be indexed once with its SHA-256, and every instance must end answered.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from relay.config import Settings
from relay.county.context import County
from relay.county.db.migrate import upgrade
from relay.dicom import wire
from tests.factories import encode, make_dataset, make_site, sha256
from tests.processes import RelayProcess, base_env, wait_for
from tests.servers import PrivatePostgres, SeaweedFS, free_ports

INSTANCES = 60
RESTART_AFTER = (10, 25)
"""Restart the server as the sender reaches these instances (fast, then immediate)."""
RETRIES = 400
"""Attempts per instance before the sender gives up (bounded; each waits 0.1 to 1 s)."""


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    yield pg
    pg.stop()


def _send_all(base: str, token: str, payloads: list[bytes], answered: list[int],
              problems: list[str], gates: dict[int, tuple[threading.Event, threading.Event]]) -> None:
    """Send like the edge; at each gate's index, say so and wait until the test has begun the
    restart, so the restart always falls in the middle of the stream."""
    with httpx.Client(base_url=base, timeout=30) as http:
        for i, data in enumerate(payloads):
            if i in gates:
                reached, go = gates[i]
                reached.set()
                go.wait(300)
            delay = 0.1
            for _ in range(RETRIES):
                try:
                    r = http.post(wire.INGEST_PATH, content=data, headers={
                        "Authorization": f"Bearer {token}", wire.HEADER_SHA256: sha256(data),
                        "Content-Type": wire.DICOM_MEDIA_TYPE})
                    if r.status_code == 200:
                        answered.append(i)
                        break
                    if r.status_code < 500:
                        problems.append(f"instance {i}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError:
                    pass
                time.sleep(delay)
                delay = min(1.0, delay * 2)
            else:
                problems.append(f"instance {i}: no 200 after {RETRIES} attempts")


def test_postgresql_restarted_mid_ingest_loses_no_committed_row_and_the_retries_succeed(
        private_pg: PrivatePostgres, seaweed: SeaweedFS, amqp_url: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    with psycopg.connect(private_pg.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE relay")
    url = private_pg.url("relay")
    upgrade(url)
    settings = Settings(data_dir=tmp_path / "var", database_url=url, broker_url=amqp_url,
                        store_url=seaweed.url_for(f"pgrestart-{run}"), queue_prefix=f"relaypg{run}")
    county = County(settings)
    _, token = make_site(county)
    port, = free_ports(1)
    api = RelayProcess("county-pg", ["county", "--no-migrate"], cwd=tmp_path, logdir=tmp_path,
                       env=base_env(data_dir=str(tmp_path / "api"), database_url=url, broker_url=amqp_url,
                                    store_url=settings.resolved_store_url, queue_prefix=settings.queue_prefix,
                                    county_port=str(port)))
    base = f"http://127.0.0.1:{port}"
    payloads = [encode(make_dataset()) for _ in range(INSTANCES)]
    answered: list[int] = []
    problems: list[str] = []
    try:
        wait_for("the county API", lambda: _healthy(base), timeout=120, procs=[api])
        gates = {after: (threading.Event(), threading.Event()) for after in RESTART_AFTER}
        sender = threading.Thread(target=_send_all, args=(base, token, payloads, answered, problems, gates),
                                  daemon=True)
        sender.start()
        for after, mode in zip(RESTART_AFTER, ("fast", "immediate"), strict=True):
            reached, go = gates[after]
            wait_for(f"the sender at instance {after}", reached.is_set, timeout=300, procs=[api])
            restart = threading.Thread(target=private_pg.restart, kwargs={"mode": mode}, daemon=True)
            restart.start()  # the sender goes on into the restarting server and retries
            go.set()
            restart.join(timeout=300)
            assert not restart.is_alive(), f"PostgreSQL did not come back ({mode})"
        sender.join(timeout=600)
        assert not sender.is_alive(), "the sender did not finish"
    finally:
        api.stop()
        county.close()
    assert problems == []
    assert sorted(answered) == list(range(INSTANCES))
    with psycopg.connect(private_pg.admin_dsn.rsplit("/", 1)[0] + "/relay") as db:
        rows = dict(db.execute("SELECT sop_uid, sha256 FROM instances").fetchall())
    expected = {_sop(data): sha256(data) for data in payloads}
    assert rows == expected, f"{len(set(expected) - set(rows))} answered instances have no row"


def _sop(data: bytes) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False

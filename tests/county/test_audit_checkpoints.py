"""The audit chain anchored outside the database (issue 10, point 6): signed checkpoints
in a folder and at every edge; a cut tail, a recomputed chain and a forged checkpoint are
named by `relay audit verify`; TRUNCATE is refused, and SQLite refuses UPDATE and DELETE."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from relay.config import Settings
from relay.county.app import create_app
from relay.county.audit import checkpoint as cps
from relay.county.audit.service import GENESIS, Action, Entry, append, chain_hash, verify
from relay.county.db.migrate import upgrade
from relay.county.db.models import AuditCheckpoint, AuditEvent
from relay.dicom.vocab import Role
from relay.edge.heartbeat import GoodputMeter, build_heartbeat, send_heartbeat
from tests.factories import make_site, make_user
from tests.processes import base_env


def _events(county, n: int, start: int = 0) -> list[int]:
    for i in range(start, start + n):
        append(county.sessions, Entry(actor=f"u{i}", role="radiologist", action=Action.STUDY_OPEN,
                                      object_type="study", object_id=f"2.25.{i}"))
    with county.sessions() as s:
        return list(s.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars())


def _dba(pg_url: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run SQL as a DBA would, past the append-only trigger (disabled, then enabled again)."""
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        try:
            for sql, params in statements:
                conn.execute(sql, params)  # type: ignore[arg-type]
        finally:
            conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")


def _verify(county, files: list[Path] | None = None):
    with county.sessions() as s:
        return verify(s, anchors=cps.load_anchors(settings=county.settings, session=s, files=files))


def _cli(county, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    st = county.settings
    env = base_env(data_dir=str(st.data_dir), database_url=st.database_url, broker_url=st.broker_url,
                   store_url=st.store_url, queue_prefix=st.queue_prefix)
    return subprocess.run([sys.executable, "-m", "relay", "audit", "verify", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def _recompute_from(pg_url: str, county, first_id: int, actor: str) -> None:
    """An attacker with database access edits event ``first_id`` and recomputes every hash
    after it, so that the unkeyed chain links again."""
    with county.sessions() as s:
        rows = list(s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())
    statements: list[tuple[str, tuple[object, ...]]] = []
    prev = GENESIS
    for row in rows:
        if row.id == first_id:
            row.actor = actor
        if row.id >= first_id:
            new = chain_hash(prev, row.at, row)
            statements.append(("UPDATE audit_events SET actor = %s, prev_hash = %s, hash = %s WHERE id = %s",
                               (row.actor, prev, new, row.id)))
            prev = new
        else:
            prev = row.hash
    _dba(pg_url, *statements)


def test_postgresql_refuses_to_truncate_the_audit_trail(county, pg_url):
    _events(county, 2)
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        for table in ("audit_events", "audit_checkpoints"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(f"TRUNCATE {table}")
    with county.sessions() as s:
        assert len(s.execute(select(AuditEvent.id)).all()) == 2


def test_sqlite_refuses_to_update_or_delete_audit_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    engine = create_engine(url)
    append(sessionmaker(engine), Entry(actor="u", role="admin", action=Action.LOGIN))
    engine.dispose()
    with sqlite3.connect(tmp_path / "county.db") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_events SET actor = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_events")
        assert db.execute("SELECT actor FROM audit_events").fetchall() == [("u",)]


def test_a_cut_tail_is_named_by_relay_audit_verify_and_the_api(county, pg_url, tmp_path):
    ids = _events(county, 10)
    assert cps.write_checkpoint(settings=county.settings, sessions=county.sessions) is not None
    assert _cli(county, cwd=tmp_path).returncode == 0
    # A DBA removes the newest three events: the rest of the chain still links.
    _dba(pg_url, ("DELETE FROM audit_events WHERE id > %s", (ids[6],)))
    with county.sessions() as s:
        assert verify(s).ok  # the unkeyed chain alone cannot see it
    result = _verify(county)
    assert not result.ok and result.missing_after_id == ids[6] and result.missing_count == 3
    assert f"3 events missing after #{ids[6]}" in result.reason
    broken = _cli(county, cwd=tmp_path)
    assert broken.returncode == 1 and f"3 events missing after #{ids[6]}" in broken.stderr
    with TestClient(create_app(county)) as client:
        password = make_user(county, "boss", Role.ADMIN)
        token = client.post("/api/auth/token", data={"username": "boss", "password": password}).json()
        body = client.get("/api/audit/verify", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert body["ok"] is False and body["missing_after_id"] == ids[6] and body["missing_count"] == 3


def test_a_recomputed_chain_is_caught_by_the_signed_checkpoints(county, pg_url):
    ids = _events(county, 3)
    cps.write_checkpoint(settings=county.settings, sessions=county.sessions)
    ids = _events(county, 3, start=3)
    cps.write_checkpoint(settings=county.settings, sessions=county.sessions,
                         now=datetime.now(UTC) + timedelta(minutes=10))
    assert _verify(county).ok and _verify(county).checkpoints == 2
    _recompute_from(pg_url, county, ids[4], "someone-else")
    with county.sessions() as s:
        assert verify(s).ok  # every link and hash is consistent again
    result = _verify(county)
    assert not result.ok and "rewritten" in result.reason
    # The first checkpoint (through the third event) still matches: the rewrite lies after it.
    assert result.first_bad_id == ids[3] and f"#{ids[3]}-#{ids[5]}" in result.reason


def test_a_forged_or_altered_checkpoint_fails_its_signature(county, pg_url):
    ids = _events(county, 4)
    genuine = cps.write_checkpoint(settings=county.settings, sessions=county.sessions)
    assert genuine is not None
    _recompute_from(pg_url, county, ids[1], "someone-else")
    with county.sessions() as s:
        new_head = s.execute(select(AuditEvent.hash).where(AuditEvent.id == ids[3])).scalar_one()
    # The attacker's checkpoint for the rewritten chain, signed with a key of their own:
    forged = cps.sign(Ed25519PrivateKey.generate(), count=4, head_id=ids[3], head_hash=new_head, at=genuine.at)
    # ... and the genuine one in the folder altered to the new head.
    altered = replace(genuine, head_hash=new_head)
    folder = county.settings.audit_checkpoint_folder / cps.FILE_NAME
    folder.write_text(forged.to_json() + "\n" + altered.to_json() + "\n")
    result = _verify(county)
    assert not result.ok and "rewritten" in result.reason  # the database's genuine copy
    assert any("not by the county's checkpoint key" in p for p in result.problems)
    assert any("does not verify" in p for p in result.problems)
    edge_copy = county.settings.data_dir / "edge-copy.jsonl"
    edge_copy.write_text(altered.to_json() + "\n")
    only_forged = _verify(county, files=[edge_copy])
    assert not only_forged.ok and "does not verify" in only_forged.reason


def test_two_writers_write_one_checkpoint_per_round(county):
    _events(county, 3)
    at = datetime.now(UTC)
    for round_no in range(2):
        now = at + timedelta(minutes=county.settings.audit_checkpoint_minutes * round_no)
        start = threading.Barrier(2)
        written: list[object] = []

        def writer(now: datetime = now, start: threading.Barrier = start, written: list[object] = written) -> None:
            start.wait(timeout=60)
            written.append(cps.write_checkpoint(settings=county.settings, sessions=county.sessions, now=now))

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(w is not None for w in written) == 1
        _events(county, 1, start=10 + round_no)
    with county.sessions() as s:
        rows = s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).scalars().all()
    lines = (county.settings.audit_checkpoint_folder / cps.FILE_NAME).read_text().splitlines()
    assert [r.count for r in rows] == [3, 4] and len(lines) == 2
    assert [json.loads(line)["count"] for line in lines] == [3, 4]
    key = county.settings.audit_checkpoint_key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A round in which nothing happened writes nothing.
    assert cps.write_checkpoint(settings=county.settings, sessions=county.sessions,
                                now=at + timedelta(hours=1)) is not None  # the 5th event is new
    assert cps.write_checkpoint(settings=county.settings, sessions=county.sessions,
                                now=at + timedelta(hours=2)) is None


def test_the_worker_loop_writes_checkpoints(county):
    _events(county, 2)
    stop = threading.Event()
    thread = threading.Thread(target=cps.run_checkpoints, args=(county.settings, county.sessions, stop))
    thread.start()
    try:
        for _ in range(600):
            with county.sessions() as s:
                if s.execute(select(AuditCheckpoint.id)).first():
                    break
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert _verify(county).checkpoints == 1


def test_an_edge_keeps_the_county_checkpoints_from_its_heartbeats(county, pg_url, tmp_path):
    _, token = make_site(county, "qingshan")
    ids = _events(county, 5)
    first = cps.write_checkpoint(settings=county.settings, sessions=county.sessions)
    edge = Settings(data_dir=tmp_path / "edge", edge_site_token=token)
    copy = edge.edge_spool_dir / cps.FILE_NAME
    with TestClient(create_app(county)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.post("/api/edges/heartbeat", json=build_heartbeat(edge, GoodputMeter())).json()[
            "audit_checkpoint"] == json.loads(first.to_json())  # type: ignore[union-attr]
        for _ in range(2):  # a second beat with the same checkpoint keeps one copy
            assert send_heartbeat(client, build_heartbeat(edge, GoodputMeter()), spool_dir=edge.edge_spool_dir) is not None
        assert copy.read_text().splitlines() == [first.to_json()]  # type: ignore[union-attr]
        ids = _events(county, 2, start=5)
        cps.write_checkpoint(settings=county.settings, sessions=county.sessions,
                             now=datetime.now(UTC) + timedelta(minutes=10))
        send_heartbeat(client, build_heartbeat(edge, GoodputMeter()), spool_dir=edge.edge_spool_dir)
    assert [json.loads(line)["count"] for line in copy.read_text().splitlines()] == [5, 7]
    # The county's own copies are gone with the cut; the edge's copy still names it.
    _dba(pg_url, ("DELETE FROM audit_events WHERE id > %s", (ids[4],)))
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit_checkpoints WHERE count = 7")
    (county.settings.audit_checkpoint_folder / cps.FILE_NAME).write_text(first.to_json() + "\n")  # type: ignore[union-attr]
    assert _cli(county, cwd=tmp_path).returncode == 0
    against_edge = _cli(county, "--checkpoints", str(copy), cwd=tmp_path)
    assert against_edge.returncode == 1 and f"2 events missing after #{ids[4]}" in against_edge.stderr


def test_verification_without_the_key_says_so_and_never_makes_one(county):
    _events(county, 2)
    cps.write_checkpoint(settings=county.settings, sessions=county.sessions)
    key = county.settings.audit_checkpoint_key_path
    key.rename(key.with_name("elsewhere.pem"))  # e.g. an API host that was not given the key
    result = _verify(county)
    assert not result.ok and "cannot check the checkpoints' signatures" in result.reason
    assert not key.exists()

"""The audit trail: who did what, hash-chained, and tampering found."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from relay.county.app import create_app
from relay.county.audit.service import Action, Entry, append, verify
from relay.county.db.models import AuditEvent
from relay.dicom.vocab import Role
from tests.county.test_reading import principal, queue_studies
from tests.factories import make_user
from tests.processes import base_env


def entries(county) -> list[tuple[str, str, str]]:
    with county.sessions() as s:
        return [(e.actor, e.action, e.outcome) for e in s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()]


def test_logins_failed_logins_claims_and_opens_are_recorded(county):
    password = make_user(county, "dr.wang", Role.RADIOLOGIST)
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        client.post("/api/auth/token", data={"username": "dr.wang", "password": "wrong-password"})
        token = client.post("/api/auth/token", data={"username": "dr.wang", "password": password}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert client.post(f"/api/worklist/{uid}/claim", headers=auth).status_code == 200
        assert client.post(f"/api/worklist/{uid}/open", headers=auth).status_code == 200
    assert entries(county) == [("dr.wang", "login.failed", "failure"), ("dr.wang", "login", "success"),
                               ("dr.wang", "study.claim", "success"), ("dr.wang", "study.open", "success")]


def test_an_intact_chain_verifies_and_an_edited_row_is_found(county, pg_url):
    for i in range(5):
        append(county.sessions, Entry(actor=f"u{i}", role="radiologist", action=Action.STUDY_OPEN,
                                      object_type="study", object_id=f"1.2.{i}"))
    with county.sessions() as s:
        assert verify(s).ok and verify(s).checked == 5
        third = s.execute(select(AuditEvent.id).order_by(AuditEvent.id).offset(2).limit(1)).scalar_one()
    # An intruder with database access, past the append-only trigger:
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute("UPDATE audit_events SET actor = 'someone-else' WHERE id = %s", (third,))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with county.sessions() as s:
        result = verify(s)
    assert not result.ok and result.first_bad_id == third and result.checked == 2


def test_a_removed_row_breaks_the_chain_after_it(county, pg_url):
    for i in range(3):
        append(county.sessions, Entry(actor=f"u{i}", role="admin", action=Action.USER_CREATE))
    with county.sessions() as s:
        second = s.execute(select(AuditEvent.id).order_by(AuditEvent.id).offset(1).limit(1)).scalar_one()
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute("DELETE FROM audit_events WHERE id = %s", (second,))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with county.sessions() as s:
        assert "removed" in verify(s).reason


def test_postgresql_refuses_to_change_audit_rows(county):
    append(county.sessions, Entry(actor="u", role="admin", action=Action.LOGIN))
    with county.sessions() as s, pytest.raises(Exception, match="append-only"):
        s.execute(text("UPDATE audit_events SET actor = 'x'"))
        s.commit()


def test_relay_audit_verify_reports_on_the_command_line(tmp_path):
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "relay", *a], cwd=tmp_path, env=base_env(),
                                          capture_output=True, text=True, timeout=120, **kw)  # noqa: E731
    assert run("sites", "create", "qingshan").returncode == 0
    ok = run("audit", "verify")
    assert ok.returncode == 0 and "1 events verified" in ok.stdout
    import sqlite3
    with sqlite3.connect(tmp_path / "var" / "county.db") as db:
        # SQLite refuses the change (migration 0028); someone with the file drops the trigger first.
        db.execute("DROP TRIGGER audit_events_no_update")
        db.execute("UPDATE audit_events SET object_id = 'other-town'")
    broken = run("audit", "verify")
    assert broken.returncode == 1 and "BROKEN" in broken.stderr

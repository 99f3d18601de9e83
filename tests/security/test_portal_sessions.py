"""Issue 13 row 19 on the portal: a cookie planted before login is not the session after it;
every state-changing route, enumerated from the app, refuses a session cookie without or
with a wrong CSRF token and changes nothing in the database; the lockout after the
configured number of failures; the idle limit (at most 30 min) on the county's clock."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, text

from reader_portal.app import create_app
from relay.config import Settings
from relay.county import clock
from relay.county.auth import sessions
from relay.county.context import County
from relay.county.db.models import Base, ReadingItem
from relay.dicom.vocab import Role
from tests.county.test_portal_sessions import csrf_of, logged_in, portal_login
from tests.county.test_reading import queue_studies
from tests.factories import make_user
from tests.security.routes import MOUNT, every_route

UNTRACKED = {"portal_sessions", "audit_events", "audit_checkpoints"}
"""Tables a refused request may touch: the session's last activity, the audit of the refusal."""


def database_digest(county: County) -> dict[str, str]:
    """SHA-256 of every row of every table but UNTRACKED, in key order."""
    digest = {}
    with county.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in UNTRACKED:
                continue
            rows = conn.execute(text(f'SELECT * FROM "{table.name}" ORDER BY 1')).all()
            digest[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return digest


def _url(path: str, uid: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: uid if "uid" in m.group(0) or "study" in m.group(0) else "1", path)


def test_a_cookie_planted_before_login_is_not_the_session_after_it(county):
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        planted = "attacker-chosen-session-value-0123456789"
        client.cookies.set(sessions.COOKIE, planted, domain="testserver.local")
        assert client.get("/api/auth/me").status_code == 401
        answer = portal_login(client, "dr.li", password)
        assert answer.status_code == 303
        issued = client.cookies[sessions.COOKIE]
        assert issued != planted
        assert client.get("/api/auth/me").json()["username"] == "dr.li"
        client.cookies.set(sessions.COOKIE, planted, domain="testserver.local")
        assert client.get("/api/auth/me").status_code == 401


def test_every_state_changing_route_refuses_a_cookie_without_its_csrf_token_and_changes_nothing(county):
    (uid,) = queue_studies(county, 1)
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    app = create_app(county)
    unsafe = [(m, p) for m, p in every_route(app) if m not in sessions.SAFE_METHODS and m != MOUNT
              and p not in ("/portal/login", "/api/auth/token")]  # logins: no session yet
    assert len(unsafe) > 20
    with TestClient(app) as client:
        for who, role in (("boss", Role.ADMIN), ("dr.li", Role.RADIOLOGIST)):
            client.cookies.clear()
            token = logged_in(client, county, who, role)
            before = database_digest(county)
            wrong = []
            for method, path in unsafe:
                for headers, form in (({}, {}), ({sessions.CSRF_HEADER: "forged"}, {"csrf_token": "forged"}),
                                      ({sessions.CSRF_HEADER: token[:-1]}, {"csrf_token": token[:-1]}),
                                      ({sessions.CSRF_HEADER: token, "Origin": "https://evil.example"},
                                       {"csrf_token": token})):
                    body = {"data": form} if path == "/portal/logout" else {"json": {}}
                    answer = client.request(method, _url(path, uid), headers=headers, follow_redirects=False,
                                            **body)  # type: ignore[arg-type]
                    # /fhir takes only the HIS's bearer token, never a session: with RELAY_HIS_FHIR_TOKEN
                    # unset it answers 404 to everyone (the database digest below shows nothing changed)
                    disabled = path.startswith("/fhir") and answer.status_code == 404
                    if answer.status_code not in (401, 403) and not disabled:
                        wrong.append(f"{who} {method} {path} {sorted(headers)} -> {answer.status_code}")
            print(f"row 19 portal {who}: {len(unsafe)} state-changing routes x 4 forged requests, "
                  f"not refused {len(wrong)}, tables changed {database_digest(county) != before}")
            assert wrong == [], "\n".join(wrong)
            assert database_digest(county) == before
            assert client.get("/api/auth/me").status_code == 200  # no forged logout went through
        # The control: the same cookie with its token does change things.
        claimed = client.post(f"/api/worklist/{uid}/claim", headers={sessions.CSRF_HEADER: csrf_of(client)})
        assert claimed.status_code == 200
    with county.sessions() as s:
        assert s.execute(select(ReadingItem.assigned_user_id)).scalar_one() is not None


def test_the_login_locks_after_the_configured_number_of_failures(county, settings):
    strict = County(settings.model_copy(update={"login_max_failures": 3}))
    try:
        password = make_user(strict, "dr.li", Role.RADIOLOGIST)
        with TestClient(create_app(strict)) as client:
            for _ in range(2):
                assert portal_login(client, "dr.li", "guess-guess-guess").status_code == 401
            assert portal_login(client, "dr.li", password).status_code == 303  # resets the count
            client.cookies.clear()
            for _ in range(3):
                assert portal_login(client, "dr.li", "guess-guess-guess").status_code == 401
            locked = portal_login(client, "dr.li", password)
            assert locked.status_code == 401 and "锁定" in locked.text and sessions.COOKIE not in client.cookies
            token = client.post("/api/auth/token", data={"username": "dr.li", "password": password})
            assert token.status_code in (401, 423, 429)  # the API's login is locked too
    finally:
        strict.close()


def test_an_idle_session_ends_at_the_limit_on_the_countys_clock(county, monkeypatch):
    limit = timedelta(minutes=county.settings.session_idle_minutes)
    assert limit <= timedelta(minutes=30)
    start = clock.now_utc()
    now = [start]
    monkeypatch.setattr(sessions, "now_utc", lambda: now[0])
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        for _ in range(4):  # activity keeps it alive past the limit
            now[0] += limit - timedelta(minutes=1, seconds=1)
            assert client.get("/api/auth/me").status_code == 200
        now[0] += limit + timedelta(seconds=1)
        assert client.get("/api/auth/me").status_code == 401
        assert client.get("/portal/", follow_redirects=False).status_code == 303


def test_the_idle_limit_cannot_be_configured_above_30_minutes():
    assert Settings().session_idle_minutes <= 30
    with pytest.raises(ValidationError):
        Settings(session_idle_minutes=31)

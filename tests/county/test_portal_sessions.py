"""Portal session cookies: the login form, CSRF on unsafe requests, logout and expiry; bearer
tokens unchanged beside them."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from reader_portal.app import create_app
from relay.county.auth.sessions import COOKIE
from relay.county.db.models import AuditEvent, PortalSession, ReadingItem, User
from relay.dicom.vocab import Role
from tests.county.test_reading import queue_studies
from tests.factories import make_user


def portal_login(client: TestClient, username: str, password: str, **extra: str):
    return client.post("/portal/login", data={"username": username, "password": password, **extra},
                       follow_redirects=False)


def logged_in(client: TestClient, county, username: str = "dr.li", role: Role = Role.RADIOLOGIST) -> str:
    """Log ``client`` in through the form; return the CSRF token its pages carry."""
    password = make_user(county, username, role)
    assert portal_login(client, username, password).status_code == 303
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    page = client.get("/portal/")
    assert page.status_code == 200, page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match
    return match.group(1)


def on_duty(county, username: str) -> bool:
    with county.sessions() as s:
        return bool(s.execute(select(User.on_duty).where(User.username == username)).scalar_one())


def assigned(county) -> list[int | None]:
    with county.sessions() as s:
        return list(s.execute(select(ReadingItem.assigned_user_id)).scalars())


def test_a_page_without_a_session_sends_the_browser_to_the_login_form_in_chinese(county):
    with TestClient(create_app(county)) as client:
        page = client.get("/portal/studies/1.2.3", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/portal/login?next=%2Fportal%2Fstudies%2F1.2.3"
        form = client.get(page.headers["location"])
        assert form.status_code == 200 and "登录" in form.text and "用户名" in form.text


def test_the_login_form_sets_an_httponly_samesite_cookie_and_stores_only_its_hash(county):
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        r = portal_login(client, "dr.li", password, next="/portal/studies/1.2.3")
        assert r.status_code == 303 and r.headers["location"] == "/portal/studies/1.2.3"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/" in cookie and "Secure" not in cookie  # plain HTTP here
        session_id = client.cookies[COOKIE]
    with county.sessions() as s:
        (row,) = s.execute(select(PortalSession)).scalars()
    assert row.session_sha256 == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in (row.session_sha256, row.csrf_token)


def test_over_https_the_cookie_is_secure(county):
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county), base_url="https://testserver") as client:
        assert "Secure" in portal_login(client, "dr.li", password).headers["set-cookie"]


def test_the_cookie_works_for_get_without_a_csrf_token(county):
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        assert client.get("/api/worklist").status_code == 200
        assert client.get("/api/auth/me").json()["username"] == "dr.li"


def test_an_unsafe_request_with_the_cookie_needs_the_csrf_token_and_changes_nothing_without(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        csrf = logged_in(client, county)
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": csrf[:-1]}):
            r = client.post(f"/api/worklist/{uid}/claim", headers=headers)
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "CSRF" in r.json()["detail"]
        assert assigned(county) == [None]
        assert client.post(f"/api/worklist/{uid}/claim", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert assigned(county) != [None]


def test_patch_with_the_cookie_and_no_csrf_is_refused_for_an_admin_too(county):
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        csrf = logged_in(client, county, "boss", Role.ADMIN)
        assert client.patch("/api/users/dr.wang", json={"on_duty": True}).status_code == 403
        assert not on_duty(county, "dr.wang")
        ok = client.patch("/api/users/dr.wang", json={"on_duty": True}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and on_duty(county, "dr.wang")


def test_a_foreign_origin_is_refused_even_with_the_right_token(county):
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        csrf = logged_in(client, county, "boss", Role.ADMIN)
        r = client.patch("/api/users/dr.wang", json={"on_duty": True},
                         headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert r.status_code == 403 and not on_duty(county, "dr.wang")
        same = client.patch("/api/users/dr.wang", json={"on_duty": True},
                            headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"})
        assert same.status_code == 200


def test_a_bearer_token_still_works_without_a_csrf_token(county):
    (uid,) = queue_studies(county, 1)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        token = client.post("/api/auth/token", data={"username": "dr.li", "password": password}).json()["access_token"]
        r = client.post(f"/api/worklist/{uid}/claim", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    assert assigned(county) != [None]


def test_logout_ends_the_session_on_the_server_so_the_old_cookie_gets_401(county):
    with TestClient(create_app(county)) as client:
        csrf = logged_in(client, county)
        old = client.cookies[COOKIE]
        assert client.post("/portal/logout", data={"csrf_token": "forged"}, follow_redirects=False).status_code == 403
        assert client.get("/api/worklist").status_code == 200  # a forged logout did nothing
        r = client.post("/portal/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/portal/login"
        assert COOKIE not in client.cookies
        client.cookies.set(COOKIE, old)  # a copy of the cookie taken before logout
        assert client.get("/api/worklist").status_code == 401
        assert client.get("/portal/", follow_redirects=False).status_code == 303
    with county.sessions() as s:
        assert s.execute(select(PortalSession)).first() is None


def test_an_expired_session_gets_401_absolute_and_idle(county):
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        past = datetime.now(UTC) - timedelta(seconds=1)
        with county.sessions() as s:
            s.execute(update(PortalSession).values(expires_at=past))
            s.commit()
        assert client.get("/api/worklist").status_code == 401
        assert client.get("/portal/", follow_redirects=False).headers["location"] == "/portal/login"

        logged_in(client, county, "dr.wang")
        idle = datetime.now(UTC) - timedelta(minutes=county.settings.session_idle_minutes, seconds=1)
        with county.sessions() as s:
            s.execute(update(PortalSession).values(last_seen_at=idle))
            s.commit()
        assert client.get("/api/worklist").status_code == 401
        assert "登录已过期" in client.get("/portal/login").text


def test_a_wrong_password_on_the_form_is_refused_audited_and_counts_towards_the_lockout(county):
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        for _ in range(county.settings.login_max_failures):
            r = portal_login(client, "dr.li", "guess-guess-guess")
            assert r.status_code == 401 and "用户名或密码错误" in r.text
        locked = portal_login(client, "dr.li", password)
        assert locked.status_code == 401 and "锁定" in locked.text and COOKIE not in client.cookies
        with county.sessions() as s:
            s.execute(update(User).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
            s.commit()
        assert portal_login(client, "dr.li", password).status_code == 303
    with county.sessions() as s:
        actions = [(e.actor, e.action) for e in s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()]
    failures = [a for a in actions if a == ("dr.li", "login.failed")]
    assert len(failures) == county.settings.login_max_failures + 1  # the locked attempt too
    assert actions[-1] == ("dr.li", "login")


def test_login_goes_back_only_to_a_portal_page_and_refuses_a_foreign_origin(county):
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        r = client.post("/portal/login", data={"username": "dr.li", "password": password},
                        headers={"Origin": "https://evil.example"}, follow_redirects=False)
        assert r.status_code == 403 and COOKIE not in client.cookies
        for target in ("https://evil.example/", "//evil.example/portal/", "/api/worklist"):
            r = portal_login(client, "dr.li", password, next=target)
            assert r.headers["location"] == "/portal/"


def test_a_new_login_replaces_the_browsers_previous_session(county):
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        first = client.cookies[COOKIE]
        portal_login(client, "dr.li", "correct-horse-1")
        assert client.cookies[COOKIE] != first
        client.cookies.set(COOKIE, first)
        assert client.get("/api/worklist").status_code == 401


def test_the_login_form_sends_a_browser_already_logged_in_straight_on(county):
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        r = client.get("/portal/login?next=%2Fportal%2Fstudies%2F1.2.3", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/portal/studies/1.2.3"


def test_portal_pages_are_never_framed_nor_cached(county):
    with TestClient(create_app(county)) as client:
        logged_in(client, county)
        for path in ("/portal/", "/portal/studies/1.2.3", "/portal/login"):
            r = client.get(path, follow_redirects=False)
            assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"

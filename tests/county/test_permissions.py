"""The permission matrix: every API route, called by every kind of caller; a 2xx where the
caller has no business is a failure. Routes are taken from the app, so new ones are covered."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.auth import sessions
from relay.county.db.models import User
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study, site_token
from tests.county.test_reports import login
from tests.factories import make_site

PUBLIC = {("GET", "/healthz"), ("POST", "/api/auth/token"), ("GET", "/api/signing-keys"), ("GET", "/metrics")}
SITE_ONLY = re.compile(r"^/api/(ingest|edges/heartbeat|edges/reports|edges/technicians|edges/orders)|^/dicomweb/studies$")
ADMIN_ONLY = re.compile(r"^/api/(edges$|quarantine|dead-letters|audit|tat|sla|readers|users)")
READER_ACTIONS = re.compile(r"^/api/(worklist/.+/(claim|release|open)|worklist/claim-next|reports/|studies/.+/reports|signing-keys)")


def routes(app) -> list[tuple[str, str]]:
    """Every (method, path) of the published OpenAPI document."""
    return sorted((method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops)


def call(client: TestClient, method: str, path: str, headers: dict[str, str], uid: str):
    url = re.sub(r"\{[^}]+\}", lambda m: uid if "uid" in m.group(0) or "study" in m.group(0) else "1", path)
    return client.request(method, url, headers=headers, json={} if method in ("POST", "PATCH") else None)


def cookie(county, username: str, *, csrf: bool = True) -> dict[str, str]:
    """A portal page session of ``username`` (made as the login form makes it), sent as the
    browser sends it; with its CSRF token unless ``csrf`` is False."""
    with county.sessions() as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one()
        session_id = sessions.create(session=s, user=user, policy=sessions.Policy())
        s.commit()
        token = sessions.resolve(session=s, session_id=session_id, policy=sessions.Policy()).csrf_token
    headers = {"Cookie": f"{sessions.COOKIE}={session_id}"}
    return {**headers, sessions.CSRF_HEADER: token} if csrf else headers


def allowed(caller: str, method: str, path: str) -> bool:
    """Whether ``caller`` may get a 2xx at all from this route (data scoping aside). A caller
    by session cookie may do what the same person may by bearer token; without the CSRF
    token, only the safe methods."""
    if (method, path) in PUBLIC:
        return True
    if caller.endswith(" cookie without csrf"):
        return method in sessions.SAFE_METHODS and allowed(caller.split()[0], method, path)
    caller = caller.removesuffix(" cookie")
    if caller == "anonymous":
        return False
    is_site_route = bool(SITE_ONLY.match(path)) and not (path == "/dicomweb/studies" and method == "GET")
    if caller == "site":
        return is_site_route
    if is_site_route:
        return False
    if ADMIN_ONLY.match(path):
        return caller == "admin"
    if caller == "other_technician" and READER_ACTIONS.match(path):
        return False
    return True


def test_no_caller_gets_a_2xx_where_it_has_no_business(county):
    app = create_app(county)
    with TestClient(app) as client:
        uid = signed_study(client, county)  # a study of township-a, signed by dr.wang
        make_site(county, "township-b")
        callers = {
            "anonymous": {},
            "site": site_token(county, "township-b"),
            "other_technician": login(client, county, "tech.b", Role.TECHNICIAN, site="township-b"),
            "radiologist": login(client, county, "dr.li", Role.RADIOLOGIST),
            "admin": login(client, county, "boss", Role.ADMIN),
        }
        callers |= {f"{who} cookie": cookie(county, username)
                    for who, username in (("other_technician", "tech.b"), ("radiologist", "dr.li"), ("admin", "boss"))}
        callers |= {f"{who} cookie without csrf": cookie(county, username, csrf=False)
                    for who, username in (("radiologist", "dr.li"), ("admin", "boss"))}
        for caller, headers in callers.items():  # the cookie callers really are logged in
            if "cookie" in caller:
                assert client.get("/api/auth/me", headers=headers).status_code == 200, caller
        wrong, unsafe_ok = [], set()
        for caller, headers in callers.items():
            for method, path in routes(app):
                response = call(client, method, path, headers, uid)
                ok = 200 <= response.status_code < 300
                if ok and method not in sessions.SAFE_METHODS:
                    unsafe_ok.add(caller)
                if ok and not allowed(caller, method, path):
                    wrong.append(f"{caller} {method} {path} -> {response.status_code}")
                # Township B's technician must never read township A's study.
                if ok and caller.startswith("other_technician") and uid in response.text:
                    wrong.append(f"{caller} saw another township's study via {method} {path}")
        assert wrong == [], "\n".join(wrong)
        assert {"radiologist cookie", "admin cookie"} <= unsafe_ok  # with the CSRF token, changes go through
        assert len(routes(app)) > 40  # the matrix really covered the API

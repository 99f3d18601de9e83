"""Issue 13 row 16: role x site x route, including IDOR. Every route of the county app (API
and portal pages, enumerated from the app) is called by every kind of caller, aimed at
township A's objects; a 2xx for a caller the table does not list is a failure, and so is a
route the table does not list. Adding a route is one line in ROUTES."""

from __future__ import annotations

import hashlib
import re
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from reader_portal.app import create_app
from relay.county.auth import sessions
from relay.county.db.models import Instance, Report, ReportDelivery, SigningKey
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study, site_token
from tests.county.test_permissions import cookie
from tests.county.test_reports import login
from tests.factories import make_site
from tests.security.routes import MOUNT, every_route

# Who may get a 2xx from a route aimed at township A's objects. Callers: anonymous;
# site_a / site_b (an edge's site credential); tech_a / tech_b (a technician of A / of B);
# radiologist; admin. A portal page (/portal/...) is answered only to a session cookie.
ANYONE = frozenset({"anonymous", "site_a", "site_b", "tech_a", "tech_b", "radiologist", "admin"})
SITES = frozenset({"site_a", "site_b"})  # edge routes not bound to one site's object
SITE_A = frozenset({"site_a"})  # an edge route on A's own object (bundle, delivery)
PEOPLE = frozenset({"tech_a", "tech_b", "radiologist", "admin"})  # scoped by site in the answer
SEES_A = frozenset({"tech_a", "radiologist", "admin"})  # A's study, its images and reports
READERS = frozenset({"radiologist", "admin"})
ADMIN = frozenset({"admin"})
NOBODY: frozenset[str] = frozenset()  # answers a redirect or an error, never a 2xx

ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/healthz"): ANYONE,
    ("GET", "/metrics"): ANYONE,
    ("GET", "/openapi.json"): ADMIN,
    ("GET", "/docs"): ADMIN,
    ("POST", "/api/auth/token"): ANYONE,
    ("GET", "/api/auth/me"): PEOPLE,
    ("PATCH", "/api/users/{username}"): ADMIN,
    # edges: ingest, heartbeat, technicians, reports home
    ("POST", "/api/ingest/instances"): SITES,
    ("POST", "/api/ingest/bundles"): SITES,
    ("GET", "/api/ingest/bundles/{bundle_id}"): SITE_A,
    ("PATCH", "/api/ingest/bundles/{bundle_id}"): SITE_A,
    ("POST", "/api/ingest/bundles/{bundle_id}/complete"): SITE_A,
    ("POST", "/dicomweb/studies"): SITES,
    ("POST", "/api/edges/heartbeat"): SITES,
    ("GET", "/api/edges/technicians"): SITES,
    ("GET", "/api/edges/reports"): SITES,
    ("GET", "/api/edges/reports/{delivery_id}/objects/{name}"): SITE_A,
    ("POST", "/api/edges/reports/{delivery_id}/delivered"): SITE_A,
    ("POST", "/api/edges/reports/{delivery_id}/acknowledged"): SITE_A,
    ("GET", "/api/edges/orders"): SITES,  # each site's own orders (site isolation: tests/county/test_edge_orders.py)
    ("POST", "/api/edges/orders"): SITES,  # an order registered at the calling site only
    # the HIS (a bearer of RELAY_HIS_FHIR_TOKEN, unset here: 404 for everyone)
    ("POST", "/fhir"): NOBODY,
    ("POST", "/fhir/ServiceRequest"): NOBODY,
    ("PUT", "/fhir/ServiceRequest/{resource_id}"): NOBODY,
    ("GET", "/fhir/ServiceRequest/{resource_id}"): NOBODY,
    # administrators
    ("GET", "/api/edges"): ADMIN,
    ("GET", "/api/quarantine"): ADMIN,
    ("GET", "/api/dead-letters"): ADMIN,
    ("POST", "/api/dead-letters/{dead_letter_id}/retry"): ADMIN,
    ("GET", "/api/audit"): ADMIN,
    ("GET", "/api/audit/export.xml"): ADMIN,
    ("GET", "/api/audit/verify"): ADMIN,
    ("GET", "/api/tat"): ADMIN,
    ("GET", "/api/tat.csv"): ADMIN,
    ("GET", "/api/sla/breaches"): ADMIN,
    ("GET", "/api/readers/workload"): ADMIN,
    ("POST", "/api/roster/shifts"): ADMIN,
    ("DELETE", "/api/roster/shifts/{shift_id}"): ADMIN,
    ("GET", "/api/his/messages"): ADMIN,
    ("POST", "/api/his/messages/{message_pk}/retry"): ADMIN,
    ("GET", "/api/reconcile"): ADMIN,
    ("POST", "/api/reconcile/studies/{study_uid}/link"): ADMIN,
    ("POST", "/api/reconcile/studies/{study_uid}/correct"): ADMIN,
    ("POST", "/api/reconcile/studies/{study_uid}/split"): ADMIN,
    # reading and reports
    ("GET", "/api/signing-keys"): ANYONE,
    ("POST", "/api/signing-keys"): READERS,
    ("POST", "/api/signing-keys/{key_id}/revoke"): ADMIN,  # dr.wang's key: not another reader's
    ("GET", "/api/report-templates"): PEOPLE,
    ("GET", "/api/studies/{study_uid}/reports"): SEES_A,
    ("POST", "/api/studies/{study_uid}/reports"): READERS,
    ("PATCH", "/api/reports/{report_id}"): READERS,
    ("POST", "/api/reports/{report_id}/sign"): READERS,
    ("GET", "/api/reports/{report_id}/signed"): SEES_A,
    ("GET", "/api/worklist"): PEOPLE,
    ("POST", "/api/worklist/claim-next"): READERS,
    ("POST", "/api/worklist/{study_uid}/claim"): READERS,
    ("POST", "/api/worklist/{study_uid}/release"): READERS,
    ("POST", "/api/worklist/{study_uid}/open"): READERS,
    ("GET", "/api/studies/{study_uid}/priors"): SEES_A,
    ("GET", "/api/studies/{study_uid}/order"): SEES_A,
    ("GET", "/api/roster/readers"): PEOPLE,
    ("GET", "/api/roster/shifts"): PEOPLE,
    ("GET", "/api/roster/week"): PEOPLE,
    ("GET", "/api/roster/on-duty"): PEOPLE,
    ("GET", "/api/roster/critical"): PEOPLE,
    ("GET", "/api/roster/critical/alerts"): PEOPLE,
    # DICOMweb (QIDO-RS search is scoped by site in the answer)
    ("GET", "/dicomweb/studies"): PEOPLE,
    ("GET", "/dicomweb/studies/{study_uid}"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/instances"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"): SEES_A,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/thumbnail"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/series/{series}/thumbnail"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/thumbnail"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered"): SEES_A,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}"): SEES_A,
    # portal pages (session cookie only)
    ("GET", "/"): NOBODY,
    ("GET", "/portal/login"): ANYONE,
    ("POST", "/portal/login"): ANYONE,
    ("POST", "/portal/logout"): NOBODY,
    (MOUNT, "/portal/static"): ANYONE,
    ("GET", "/portal/"): PEOPLE,
    ("GET", "/portal/studies/{study_uid}"): SEES_A,
    ("GET", "/portal/roster"): READERS,
    ("GET", "/portal/admin/tat"): ADMIN,
    ("GET", "/portal/admin/edges"): ADMIN,
    ("GET", "/portal/admin/workload"): ADMIN,
    ("GET", "/portal/admin/audit"): ADMIN,
    ("GET", "/portal/admin/his"): ADMIN,
    ("GET", "/portal/admin/reconcile"): ADMIN,
}
PUBLIC_PAGES = {("GET", "/portal/login"), ("POST", "/portal/login"), (MOUNT, "/portal/static")}
LAST = {("POST", "/portal/logout"), ("POST", "/api/signing-keys/{key_id}/revoke")}
"""Called after the others: an allowed call here ends the session or the key the rest use."""


def allowed(caller: str, method: str, path: str) -> bool:
    """Whether ``caller`` ("radiologist", "admin cookie", "admin cookie nocsrf", ...) may get a
    2xx. A cookie may do what its person may by token, only safe methods without its CSRF
    token; a portal page answers only a cookie."""
    who = caller.split()[0]
    if who not in ROUTES[(method, path)]:
        return False
    if (method, path) in PUBLIC_PAGES or ROUTES[(method, path)] == ANYONE:
        return True
    by_cookie = "cookie" in caller
    if path.startswith("/portal/") and not by_cookie:
        return False
    return not (caller.endswith("nocsrf") and method not in sessions.SAFE_METHODS and method != MOUNT)


def test_every_route_of_the_app_has_a_rule_in_the_table(county):
    app = create_app(county)
    found = set(every_route(app))
    missing = sorted(found - ROUTES.keys())
    assert missing == [], f"routes without a rule: add one line each to ROUTES: {missing}"
    assert sorted(ROUTES.keys() - found) == [], "rules for routes the app no longer has"


def _fixture_ids(client: TestClient, county) -> tuple[dict[str, str], dict[str, str]]:
    """A signed, delivered study of township A and the ids of its objects; A's credential."""
    uid = signed_study(client, county)
    site_a = site_token(county, "township-a")
    with county.sessions() as s:
        instance = s.execute(select(Instance).where(Instance.study_uid == uid)).scalars().first()
        report = s.execute(select(Report)).scalars().first()
        delivery = s.execute(select(ReportDelivery)).scalars().first()
        key = s.execute(select(SigningKey)).scalars().first()
    body = b"x" * 10
    bundle_id = str(uuid.uuid4())
    made = client.post("/api/ingest/bundles", headers=site_a, json={
        "bundle_id": bundle_id, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
        "encoding": "identity", "instances": [{"sop_uid": "1.2.3", "size": len(body),
                                               "sha256": hashlib.sha256(body).hexdigest()}]})
    assert made.status_code in (200, 201), made.text
    return site_a, {"study_uid": uid, "study": uid, "series_uid": instance.series_uid, "series": instance.series_uid,
            "sop_uid": instance.sop_uid, "sop": instance.sop_uid, "report_id": str(report.id),
            "delivery_id": str(delivery.id), "name": "signed", "key_id": str(key.id), "bundle_id": bundle_id,
            "username": "dr.wang", "frame": "1", "frame_list": "1", "shift_id": "1", "dead_letter_id": "1",
            "resource_id": "1", "message_pk": "1"}


def _url(path: str, ids: dict[str, str]) -> str:
    if path == "/portal/static":
        return "/portal/static/portal.js"
    return re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path)


def test_no_caller_gets_a_2xx_it_has_no_right_to_nor_another_townships_data(county):
    app = create_app(county)
    with TestClient(app) as client:
        site_a, ids = _fixture_ids(client, county)
        make_site(county, "township-b")
        site_b = site_token(county, "township-b")
        callers = {
            "anonymous": {}, "site_a": site_a, "site_b": site_b,
            "tech_a": login(client, county, "tech.a", Role.TECHNICIAN, site="township-a"),
            "tech_b": login(client, county, "tech.b", Role.TECHNICIAN, site="township-b"),
            "radiologist": login(client, county, "dr.li", Role.RADIOLOGIST),
            "admin": login(client, county, "boss", Role.ADMIN),
        }
        for who, username in (("tech_a", "tech.a"), ("tech_b", "tech.b"), ("radiologist", "dr.li"),
                              ("admin", "boss")):
            callers[f"{who} cookie"] = cookie(county, username)
            callers[f"{who} cookie nocsrf"] = cookie(county, username, csrf=False)
        client.cookies.clear()
        table = every_route(app)
        ordered = sorted(table, key=lambda r: r in LAST)
        wrong: list[str] = []
        calls = granted = 0
        # Pass 1: every call the table refuses, on untouched state; pass 2: the allowed ones.
        for refused_pass in (True, False):
            for method, path in ordered:
                for caller, headers in callers.items():
                    if allowed(caller, method, path) == refused_pass:
                        continue
                    verb = "GET" if method == MOUNT else method
                    answer = client.request(verb, _url(path, ids), headers=headers, follow_redirects=False,
                                            json={} if verb in ("POST", "PATCH") else None)
                    calls += 1
                    ok = 200 <= answer.status_code < 300
                    granted += ok and not refused_pass
                    if ok and refused_pass:
                        wrong.append(f"{caller} {method} {path} -> {answer.status_code}")
                    if ok and caller.split()[0] in ("tech_b", "site_b") and ids["study_uid"] in answer.text:
                        wrong.append(f"{caller} saw township A's study via {method} {path}")
        print(f"row 16 county: {len(table)} routes x {len(callers)} callers, {calls} calls refused or allowed, "
              f"{granted} allowed 2xx, unauthorised 2xx or another township's data {len(wrong)}")
        assert wrong == [], "\n".join(wrong)
        assert len(table) > 80 and calls > 1000 and granted > 50  # the matrix really ran

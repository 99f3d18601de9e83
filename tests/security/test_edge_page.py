"""Issue 13 rows 16 and 19 on the edge's technician page: every route of its app, enumerated,
against a table of who may use it; a form without or with a wrong CSRF token changes
nothing (the spool's and the acknowledgements' files compared byte for byte); a cookie
planted before login is not the session after it; the lockout after the configured number
of failures; the idle limit (at most 30 min) on the page's own clock, without waiting."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from pydicom.uid import generate_uid

from relay.config import Settings
from relay.dicom.header import InstanceIds
from relay.dicom.vocab import Priority
from relay.edge.admission import Alarms
from relay.edge.page_security import LOGIN_COOKIE, SESSION_COOKIE
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage, build_app
from tests.edge.techpage import PASSWORD, cached_technician, form_token, log_in
from tests.factories import make_instance
from tests.security.routes import every_route

DELIVERY = 7
OTHER_DELIVERY = 8  # a delivery of another site: never fetched to this edge

# Who may make a route take effect (2xx, or a 303 back to the page): "anonymous", or a
# "technician" of this site by session cookie (with the form's CSRF token, or "nocsrf").
TECHNICIAN = frozenset({"technician"})
ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/login"): frozenset({"anonymous", "technician", "technician nocsrf"}),
    ("POST", "/login"): frozenset(),  # needs a username and password: see the login tests
    ("POST", "/logout"): TECHNICIAN,
    ("GET", "/"): frozenset({"technician", "technician nocsrf"}),
    ("POST", "/studies/{study_uid}/stat"): TECHNICIAN,
    ("GET", "/reports/{delivery_id}/pdf"): frozenset({"technician", "technician nocsrf"}),
    ("POST", "/reports/{delivery_id}/ack"): TECHNICIAN,
    ("GET", "/api/summary"): frozenset({"technician", "technician nocsrf"}),
    ("GET", "/register"): frozenset({"technician", "technician nocsrf"}),  # 登记 (an empty form changes nothing)
    ("POST", "/register"): TECHNICIAN,
}
LAST = {("POST", "/logout")}


def _a_report(root: Path, delivery_id: int = DELIVERY) -> None:
    folder = root / "reports" / str(delivery_id)
    folder.mkdir(parents=True)
    (folder / "pdf.pdf").write_bytes(b"%PDF-1.4 test")
    (folder / "delivery.json").write_text(json.dumps({
        "delivery_id": delivery_id, "study_instance_uid": "1.2.3.4", "revision": 1, "kind": "report",
        "critical": True, "reader": "dr.wang", "signed_at": "2026-12-04T08:00:00+00:00", "objects": ["pdf"]}))


def _a_study(spool: Spool) -> str:
    data = make_instance()
    ids = InstanceIds(sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_uid=generate_uid(), study_uid=generate_uid(),
                      series_uid=generate_uid(), transfer_syntax_uid="1.2.840.10008.1.2.1")
    spool.store(data, ids=ids, priority=Priority.ROUTINE, calling_ae="MODALITY", peer="127.0.0.1")
    return ids.study_uid


def files_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (the spool, its journals, acks, reports)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-shm",))}


@pytest.fixture
def page(edge_settings: Settings, spool: Spool) -> Iterator[StatusPage]:
    _a_report(spool.root)
    cached_technician(spool.root)
    running = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                         settings=edge_settings.model_copy(update={"login_max_failures": 3}))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _base(page: StatusPage) -> str:
    return f"http://127.0.0.1:{page.port}"


def _logged_in(page: StatusPage) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=_base(page), timeout=30)
    answer = log_in(client)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/?"), answer.text
    return client, form_token(client.get("/").text)


def took_effect(answer: httpx.Response) -> bool:
    location = answer.headers.get("location", "")
    return 200 <= answer.status_code < 300 or (answer.status_code == 303 and location.startswith("/?"))


def test_every_route_of_the_page_has_a_rule(page: StatusPage) -> None:
    found = set(every_route(build_app(page.deps)))
    assert sorted(found - ROUTES.keys()) == [], "routes without a rule: add one line each to ROUTES"
    assert sorted(ROUTES.keys() - found) == []


def test_no_caller_makes_a_route_take_effect_without_the_right_and_no_other_sites_report(
        page: StatusPage, spool: Spool) -> None:
    study_uid = _a_study(spool)
    client, token = _logged_in(page)
    with closing(client), httpx.Client(base_url=_base(page), timeout=30) as anonymous:
        nocsrf = httpx.Client(base_url=_base(page), timeout=30, cookies=client.cookies)
        callers = {"anonymous": (anonymous, ""), "technician nocsrf": (nocsrf, "forged"), "technician": (client, token)}
        wrong, calls = [], 0
        for method, path in sorted(ROUTES, key=lambda r: r in LAST):
            for caller, (http, csrf) in callers.items():
                for delivery in (DELIVERY, OTHER_DELIVERY):
                    url = path.replace("{study_uid}", study_uid).replace("{delivery_id}", str(delivery))
                    data = {"csrf": csrf, "lang": "zh"} if method == "POST" else None
                    answer = http.request(method, url, data=data)
                    calls += 1
                    may = caller in ROUTES[(method, path)] and (delivery == DELIVERY or "{delivery_id}" not in path)
                    if took_effect(answer) and not may:
                        wrong.append(f"{caller} {method} {url} -> {answer.status_code}")
                    if method == "POST" and path == "/logout" and took_effect(answer):
                        client.cookies.clear()
        nocsrf.close()
    print(f"row 16 edge page: {len(ROUTES)} routes x {len(callers)} callers x 2 deliveries, {calls} calls, "
          f"unauthorised effect {len(wrong)}")
    assert wrong == [], "\n".join(wrong)
    assert calls == len(ROUTES) * len(callers) * 2


def test_a_form_without_or_with_a_wrong_csrf_token_changes_nothing(page: StatusPage, spool: Spool) -> None:
    study_uid = _a_study(spool)
    client, token = _logged_in(page)
    forms = [f"/studies/{study_uid}/stat", f"/reports/{DELIVERY}/ack", "/register", "/logout"]
    assert {p for m, p in ROUTES if m == "POST"} - {"/login"} == {
        "/studies/{study_uid}/stat", "/reports/{delivery_id}/ack", "/register", "/logout"}  # every state-changing form
    before = files_digest(spool.root)
    with closing(client):
        for url in forms:
            for data in ({"lang": "zh"}, {"csrf": "forged"}, {"csrf": token[:-1]}, {"csrf": ""}):
                assert client.post(url, data=data).status_code == 403, (url, data)
        assert files_digest(spool.root) == before
        assert client.get("/api/summary").status_code == 200  # the forged logout did not log out
        assert "已确认" not in client.get("/").text
        assert client.post(f"/reports/{DELIVERY}/ack", data={"csrf": token}).status_code == 303  # the control
        assert files_digest(spool.root) != before
    with httpx.Client(base_url=_base(page)) as stranger:
        stranger.get("/login")
        for csrf in ("forged", ""):
            answer = stranger.post("/login", data={"username": "tech.li", "password": PASSWORD, "csrf": csrf})
            assert answer.status_code == 403 and SESSION_COOKIE not in stranger.cookies


def test_a_cookie_planted_before_login_is_not_the_session_after_it(page: StatusPage) -> None:
    planted = "attacker-chosen-session-value-0123456789"
    with httpx.Client(base_url=_base(page)) as victim:
        victim.cookies.set(SESSION_COOKIE, planted)
        victim.cookies.set(LOGIN_COOKIE, "attacker-chosen-login-token")
        token = form_token(victim.get("/login").text)
        answer = victim.post("/login", data={"csrf": token, "username": "tech.li", "password": PASSWORD})
        assert answer.status_code == 303
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
        issued = re.search(rf"{SESSION_COOKIE}=([^;]+)", cookie)
        assert issued and issued.group(1) != planted
    with httpx.Client(base_url=_base(page), cookies={SESSION_COOKIE: planted}) as attacker:
        assert attacker.get("/api/summary").status_code == 401
    # An attacker's own live session planted in the victim's browser does not survive the
    # victim's login either: the victim gets a fresh id, the attacker's stays the attacker's.
    attacker_client, _ = _logged_in(page)
    with closing(attacker_client), httpx.Client(base_url=_base(page)) as victim:
        mine = attacker_client.cookies[SESSION_COOKIE]
        victim.cookies.set(SESSION_COOKIE, mine)
        answer = log_in(victim)
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
        assert f"{SESSION_COOKIE}={mine}" not in cookie


def test_the_login_locks_after_the_configured_number_of_failures(page: StatusPage) -> None:
    assert page.deps.technicians.max_failures == 3  # as configured (RELAY_LOGIN_MAX_FAILURES)
    with httpx.Client(base_url=_base(page)) as client:
        for _ in range(2):
            assert log_in(client, password="wrong-password").status_code == 401
        assert log_in(client).status_code == 303  # two failures: not locked, and the count resets
        client.cookies.clear()
        for _ in range(3):
            assert log_in(client, password="wrong-password").status_code == 401
        locked = log_in(client)
        assert locked.status_code == 401 and "锁定" in locked.text and SESSION_COOKIE not in client.cookies


def test_an_idle_session_ends_at_the_limit_on_the_pages_clock(page: StatusPage) -> None:
    now = [10_000.0]
    page.deps.sessions.clock = lambda: now[0]
    idle_s = page.deps.sessions.idle_s
    assert idle_s <= 30 * 60
    client, _ = _logged_in(page)
    with closing(client):
        for _ in range(5):  # the page's own refresh (auto=1, /api/summary) is not activity
            now[0] += idle_s / 5 - 1
            assert client.get("/api/summary").status_code == 200
        now[0] += 10
        assert client.get("/api/summary").status_code == 401
        assert client.get("/?auto=1").headers["location"].endswith("expired=1")
    client, _ = _logged_in(page)
    with closing(client):
        for _ in range(5):  # clicks keep it alive for longer than the limit
            now[0] += idle_s - 1
            assert client.get("/").status_code == 200
        now[0] += idle_s + 1
        assert client.get("/", follow_redirects=False).status_code == 303


def test_the_idle_limit_cannot_be_configured_above_30_minutes() -> None:
    with pytest.raises(ValidationError):
        Settings(edge_status_session_idle_minutes=31)

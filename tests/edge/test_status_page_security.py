"""The technician's page is closed to whoever merely reaches it: every route needs a
technician's login, foreign Host names are refused (DNS rebinding), the page cannot be
framed, runs no inline script, and every form needs its CSRF token."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.config import Settings
from relay.edge.admission import Alarms
from relay.edge.page_security import Sessions
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from relay.edge.technicians import Technician
from tests.edge.techpage import PASSWORD, cached_technician, form_token, log_in, logged_in

DELIVERY = 7


def _a_report(settings: Settings, *, critical: bool = True) -> None:
    """A report fetched to this edge, as the pickup leaves it (delivery.json and the PDF)."""
    folder = settings.edge_spool_dir / "reports" / str(DELIVERY)
    folder.mkdir(parents=True)
    (folder / "pdf.pdf").write_bytes(b"%PDF-1.4 test")
    (folder / "delivery.json").write_text(json.dumps({
        "delivery_id": DELIVERY, "study_instance_uid": "1.2.3.4", "revision": 1, "kind": "report",
        "critical": critical, "reader": "dr.wang", "signed_at": "2026-12-04T08:00:00+00:00",
        "objects": ["pdf"]}))


@pytest.fixture
def base(edge_settings: Settings, spool: Spool) -> Iterator[str]:
    _a_report(edge_settings)
    cached_technician(spool.root)
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=edge_settings)
    page.start()
    try:
        yield f"http://127.0.0.1:{page.port}"
    finally:
        page.stop()


def test_anonymous_requests_get_the_login_page_or_401(base: str) -> None:
    home = httpx.get(base + "/")
    assert home.status_code == 303 and home.headers["location"].startswith("/login")
    assert httpx.get(base + f"/reports/{DELIVERY}/pdf").status_code == 401
    assert httpx.get(base + "/api/summary").status_code == 401
    assert httpx.post(base + f"/reports/{DELIVERY}/ack", data={"csrf": "x"}).status_code == 401
    login = httpx.get(base + "/login")
    assert "技师登录" in login.text and "1.2.3.4" not in login.text
    assert "有危急值报告待确认" in login.text  # the alarm shows, without any patient data


def test_a_logged_in_technician_gets_the_page_and_the_pdf(base: str) -> None:
    with logged_in(base) as client:
        page = client.get("/")
        assert page.status_code == 200 and "李技师" in page.text
        pdf = client.get(f"/reports/{DELIVERY}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"


def test_a_foreign_host_name_is_refused(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    assert httpx.get(base + "/login", headers={"Host": f"evil.example:{port}"}).status_code == 421
    assert httpx.get(base + "/login", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_the_allow_list_setting_replaces_the_default(edge_settings: Settings, spool: Spool) -> None:
    settings = edge_settings.model_copy(update={"edge_status_allowed_hosts": "edge-a.township.local"})
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=settings)
    page.start()
    try:
        url = f"http://127.0.0.1:{page.port}/login"
        assert httpx.get(url).status_code == 421
        assert httpx.get(url, headers={"Host": f"edge-a.township.local:{page.port}"}).status_code == 200
    finally:
        page.stop()


def test_pages_cannot_be_framed_and_run_no_inline_script(base: str) -> None:
    with logged_in(base) as client:
        for answer in (client.get("/login"), client.get("/"), client.get(f"/reports/{DELIVERY}/pdf"),
                       httpx.get(base + "/api/summary")):
            assert answer.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["cache-control"] == "no-store"
        page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "script-src" not in policy and "default-src 'none'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and f'<style nonce="{nonce.group(1)}">' in page.text
    assert "<script" not in page.text


def test_the_session_cookie_is_httponly_and_samesite_strict(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        answer = log_in(client)
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "relay_edge_session" in v)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def test_every_form_needs_its_csrf_token(base: str) -> None:
    with logged_in(base) as client:
        token = form_token(client.get("/").text)
        assert client.post(f"/reports/{DELIVERY}/ack", data={"lang": "zh"}).status_code == 403
        assert client.post(f"/reports/{DELIVERY}/ack", data={"csrf": "forged"}).status_code == 403
        assert client.post("/logout", data={}).status_code == 403
        assert "已确认" not in client.get("/").text
        assert client.post(f"/reports/{DELIVERY}/ack", data={"csrf": token}).status_code == 303
    with httpx.Client(base_url=base) as anonymous:
        anonymous.get("/login")
        refused = anonymous.post("/login", data={"username": "tech.li", "password": PASSWORD, "csrf": "forged"})
        assert refused.status_code == 403


def test_the_acknowledgement_names_the_logged_in_technician_not_a_typed_name(base: str, spool: Spool) -> None:
    from relay.edge.acks import AckJournal

    with logged_in(base) as client:
        token = form_token(client.get("/").text)
        client.post(f"/reports/{DELIVERY}/ack", data={"csrf": token, "by": "someone else"})
        assert "已确认（待上传）" in client.get("/").text
    ack = AckJournal(spool.root).get(DELIVERY)
    assert ack is not None and (ack.username, ack.display_name) == ("tech.li", "李技师")


def test_wrong_passwords_lock_the_login_even_for_the_right_one(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        for _ in range(5):
            assert log_in(client, password="wrong-password").status_code == 401
        locked = log_in(client)
        assert locked.status_code == 401 and "锁定" in locked.text
        assert log_in(client, username="nobody").status_code == 401


def test_a_disabled_technician_cannot_log_in(edge_settings: Settings, spool: Spool) -> None:
    cache = cached_technician(spool.root, "tech.gone", active=False)
    from relay.edge.technicians import LoginRefused

    with pytest.raises(LoginRefused):
        cache.authenticate("tech.gone", PASSWORD)


def test_an_idle_session_ends_and_the_page_refresh_does_not_keep_it(base: str) -> None:
    sessions = Sessions(idle_s=0.3)
    cookie, _ = sessions.create(Technician("tech.li", "李技师"))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # only refreshes: not activity
        sessions.get(cookie, touch=False)
        time.sleep(0.05)
    assert sessions.get(cookie) is None
    busy, _ = sessions.create(Technician("tech.li", "李技师"))
    for _ in range(10):  # clicks keep it
        time.sleep(0.1)
        assert sessions.get(busy) is not None


def test_the_auto_refresh_of_an_expired_session_lands_on_the_login_page(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        answer = client.get("/?lang=zh&auto=1")
    assert answer.status_code == 303 and "expired=1" in answer.headers["location"]


def test_a_lan_address_without_tls_logs_a_security_warning(
    edge_settings: Settings, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="relay.edge.status_page"):
        StatusPage(spool=spool, alarms=Alarms(), host="0.0.0.0", port=0, timezone="Asia/Shanghai",
                   settings=edge_settings)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without TLS" in m for m in warned) and any("ALLOWED_HOSTS" in m for m in warned)
    assert any("no technician login" in m for m in warned)
    caplog.clear()
    cached_technician(spool.root)
    with caplog.at_level(logging.WARNING, logger="relay.edge.status_page"):
        StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                   settings=edge_settings)
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


def test_the_page_serves_https_with_a_secure_cookie(edge_settings: Settings, spool: Spool, tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "page.pem", tmp_path / "page.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    cached_technician(spool.root)
    settings = edge_settings.model_copy(update={"edge_status_tls_cert": cert, "edge_status_tls_key": key})
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=settings)
    page.start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://localhost:{page.port}", verify=trust) as client:
            answer = log_in(client)
        assert answer.status_code == 303
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "relay_edge_session" in v)
        assert "Secure" in cookie
    finally:
        page.stop()

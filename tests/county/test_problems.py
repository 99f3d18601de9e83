"""Every error the county answers is an RFC 9457 problem document (issue 10, point 7);
a browser under /portal gets an HTML page instead."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.county.context import County
from reader_portal.app import create_app as create_portal_app

PROBLEM = "application/problem+json"


def assert_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = r.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body), body
    assert body["status"] == status and body["detail"]
    return body


@pytest.fixture
def client(county: County):
    with TestClient(create_app(county), raise_server_exceptions=False) as c:
        yield c


def test_an_unknown_route_is_a_404_problem(client):
    body = assert_problem(client.get("/api/no-such-thing?PatientName=X"), 404)
    assert body["instance"] == "/api/no-such-thing"  # the path, never the query


def test_a_wrong_method_is_a_405_problem(client):
    r = client.delete("/healthz")
    assert_problem(r, 405)
    assert "GET" in r.headers.get("allow", "")


def test_a_validation_error_is_a_422_problem_without_the_input(client):
    r = client.post("/api/auth/token", data={"username": "王小明"})
    body = assert_problem(r, 422)
    assert any(e["loc"][-1] == "password" for e in body["errors"])
    assert "王小明" not in r.text


def test_an_unhandled_error_is_a_500_problem_without_trace_and_logged_with_request_id(county, caplog):
    app = create_app(county)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret " + "".join(["王", "小明"]) + " in the message")

    with TestClient(app) as c, caplog.at_level(logging.ERROR):
        r = c.get("/api/boom")
    body = assert_problem(r, 500)
    assert "Traceback" not in r.text and "secret" not in r.text and "RuntimeError" not in r.text
    rid = body["request_id"]
    assert r.headers["x-request-id"] == rid and rid in body["detail"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert rid in logged and "boom" in logged and "王小明" not in logged


def test_the_proxys_request_id_is_kept(client):
    r = client.get("/nowhere", headers={"X-Request-ID": "abc-123"})
    assert assert_problem(r, 404)["request_id"] == "abc-123"


def test_a_browser_under_portal_gets_an_html_error_page(county):
    with TestClient(create_portal_app(county), raise_server_exceptions=False) as c:
        page = c.get("/portal/no-such-page", headers={"Accept": "text/html,application/xhtml+xml"})
        api = c.get("/portal/no-such-page", headers={"Accept": "application/json"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "页面不存在" in page.text and page.headers["x-frame-options"] == "DENY"
    assert_problem(api, 404)

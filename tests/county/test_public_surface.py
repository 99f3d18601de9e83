"""What the county shows to whoever reaches it (issue 10, point 8): /metrics needs its token
and only reads the database; /docs and /openapi.json are for administrators or off."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.models import MetricDelta
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user

TOKEN = "prometheus-scrape-token-1"


def assert_problem(r, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")


def test_metrics_are_off_without_a_token_setting(county):
    assert county.settings.metrics_token is None
    with TestClient(create_app(county)) as c:
        assert_problem(c.get("/metrics"), 404)
        assert_problem(c.get("/metrics", headers={"Authorization": "Bearer anything"}), 404)


def test_metrics_need_the_token_when_one_is_set(county, settings):
    with_token = County(settings.model_copy(update={"metrics_token": TOKEN}))
    try:
        with TestClient(create_app(with_token)) as c:
            assert_problem(c.get("/metrics"), 401)
            assert_problem(c.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
            r = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and "relay_studies" in r.text
    finally:
        with_token.close()


def _received(body: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(body) for s in family.samples
               if s.name == "relay_instances_received_total")


def test_a_scrape_works_on_a_read_only_connection_and_counts_the_unfolded_deltas(county, settings, pg_url):
    site_id, _ = make_site(county)
    for _ in range(2):
        index(county, ingest(county, encode(make_dataset()), site_id=site_id))
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricDelta)) > 0  # nothing folded yet
    read_only_url = pg_url + "?options=-c%20default_transaction_read_only%3Don"
    replica = County(settings.model_copy(update={"database_url": read_only_url, "metrics_token": TOKEN}))
    try:
        with replica.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW default_transaction_read_only").scalar() == "on"
        with TestClient(create_app(replica)) as c:
            before = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert before.status_code == 200, before.text
            from relay.county.metrics.folding import fold_once
            fold_once(county.sessions)  # the worker's job, on the writable database
            after = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert _received(before.text) == _received(after.text) == 2
    finally:
        replica.close()
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricDelta)) == 0


def _token(c: TestClient, county: County, username: str, role: Role) -> dict[str, str]:
    password = make_user(county, username, role)
    r = c.post("/api/auth/token", data={"username": username, "password": password})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_api_docs_are_for_administrators_only(county):
    with TestClient(create_app(county)) as c:
        for path in ("/openapi.json", "/docs"):
            assert_problem(c.get(path), 401)
        reader = _token(c, county, "reader", Role.RADIOLOGIST)
        admin = _token(c, county, "admin", Role.ADMIN)
        for path in ("/openapi.json", "/docs"):
            assert_problem(c.get(path, headers=reader), 403)
        doc = c.get("/openapi.json", headers=admin)
        assert doc.status_code == 200 and "/api/worklist" in doc.json()["paths"]
        assert c.get("/docs", headers=admin).status_code == 200
        assert_problem(c.get("/redoc"), 404)


def test_api_docs_can_be_switched_off(county, settings):
    off = County(settings.model_copy(update={"api_docs": False}))
    try:
        with TestClient(create_app(off)) as c:
            admin = _token(c, off, "admin", Role.ADMIN)
            for path in ("/openapi.json", "/docs"):
                assert_problem(c.get(path, headers=admin), 404)
    finally:
        off.close()


def scrape_text(client: TestClient, county: County) -> str:
    """GET /metrics as Prometheus does, with the county's metrics token (set for the test
    if it has none)."""
    county.settings.metrics_token = county.settings.metrics_token or TOKEN
    r = client.get("/metrics", headers={"Authorization": f"Bearer {county.settings.metrics_token}"})
    assert r.status_code == 200, r.text
    return r.text


def test_the_workers_fold_job_moves_the_pending_deltas_and_stops(county):
    import threading
    import time

    from relay.county.metrics.folding import run_folding

    site_id, _ = make_site(county)
    index(county, ingest(county, encode(make_dataset()), site_id=site_id))
    stop = threading.Event()
    worker = threading.Thread(target=run_folding, args=(county.sessions, stop), kwargs={"every_s": 0.2})
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with county.sessions() as s:
                if s.scalar(select(func.count()).select_from(MetricDelta)) == 0:
                    break
            time.sleep(0.1)
        with county.sessions() as s:
            assert s.scalar(select(func.count()).select_from(MetricDelta)) == 0
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()

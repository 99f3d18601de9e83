"""Issue 13 row 18, CI size: sqlmap (boolean-blind and time-based, level 1) on a few query
parameters of the county app over HTTP on loopback, on the real PostgreSQL, with an
administrator's bearer token; none may be injectable. A positive control first: a
throwaway endpoint of this test that formats its SQL by hand, on the same database, which
sqlmap must find injectable, or the scan proves nothing. The full scan of every
parameter: bench/sqlmap_scan.py."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from bench.common import serve_app
from reader_portal.app import create_app
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study
from tests.county.test_reports import login
from tests.security.sqlmap import Target, scan, targets

SCAN_TIMEOUT_S = 240.0
CI_PARAMETERS = [("/api/worklist", "patient"), ("/dicomweb/studies", "PatientName"), ("/api/audit", "actor"),
                 ("/api/tat", "since")]
"""A few parameters that reach SQL through different code (ORM filters, the QIDO-RS matcher,
the audit search, the TAT window); bench/sqlmap_scan.py covers every one."""


def vulnerable_app(url: str) -> FastAPI:
    """Deliberately injectable (test only): a username pasted into SQL text."""
    engine = create_engine(url)
    app = FastAPI()

    @app.get("/users")
    def users(name: Annotated[str, Query()] = "x") -> dict[str, int]:
        with engine.connect() as conn:
            count = conn.execute(text(f"SELECT count(*) FROM users WHERE username = '{name}'")).scalar_one()  # noqa: S608
        return {"count": int(count)}

    return app


@pytest.fixture
def admin_and_ids(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county)  # rows for the scanned queries to find
        return login(client, county, "boss", Role.ADMIN), {"study_uid": uid}


def test_the_positive_control_is_found_injectable(county, pg_url):
    from tests.factories import make_user

    make_user(county, "dr.li", Role.RADIOLOGIST)
    with serve_app(vulnerable_app(pg_url)) as base:
        verdict = scan(base, Target("/users", "name", "/users?name=dr.li"), headers={}, timeout_s=SCAN_TIMEOUT_S)
    assert verdict.injectable, verdict.output[-3000:]


@pytest.mark.parametrize(("path", "parameter"), CI_PARAMETERS)
def test_no_query_parameter_is_injectable(county, admin_and_ids, path, parameter):
    headers, ids = admin_and_ids
    app = create_app(county)
    (target,) = [t for t in targets(app, ids) if (t.path, t.parameter) == (path, parameter)]
    with serve_app(app) as base:
        verdict = scan(base, target, headers=headers, timeout_s=SCAN_TIMEOUT_S)
    assert verdict.baseline_status == 200 and verdict.tested, verdict.output[-3000:]
    assert not verdict.injectable, verdict.output[-3000:]

"""Turnaround times on a seeded history of 10,000 studies, checked against numpy."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance, Patient, Site, Study, StudyTransition
from relay.county.reading import service as reading
from relay.county.tat import service
from relay.dicom.vocab import Priority, Role
from tests.county.test_reading import principal, queue_studies
from tests.county.test_reports import login

N = 10_000
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SITES = ["qingshan", "huxi", "baishi"]
PRIORITY_SCALE = {"stat": 600.0, "routine": 7200.0}  # seconds: STAT stages are faster
MILESTONES = ["arrived", "queued", "assigned", "reading", "signed", "delivered", "acknowledged"]


def seed(county) -> dict[str, list[float]]:
    """Insert the history; return the true durations per (site, priority, stage)."""
    rng = np.random.default_rng(20261123)
    truth: dict[str, list[float]] = {}
    sites = [{"id": i + 1, "name": n, "display_name": n, "token_sha256": f"{i:064d}", "created_at": T0}
             for i, n in enumerate(SITES)]
    patients, studies, transitions, instances = [], [], [], []
    for i in range(N):
        site, priority = SITES[i % 3], ("stat" if i % 5 == 0 else "routine")
        scale = PRIORITY_SCALE[priority]
        edge = T0 + timedelta(seconds=float(i * 200))
        gaps = rng.lognormal(np.log([120, 0.01, scale, 60, scale / 4, 30, 600]), 0.5)
        reached = len(MILESTONES) if i % 10 else int(rng.integers(2, len(MILESTONES)))  # 10% still under way
        at = edge + timedelta(seconds=float(gaps[0]))
        patients.append({"id": i + 1, "patient_id": f"P{i}", "issuer": f"site:{site}", "name": "", "birth_date": "", "sex": ""})
        studies.append({"id": i + 1, "study_uid": f"2.25.{i + 1}", "patient_pk": i + 1, "site_id": SITES.index(site) + 1,
                        "accession_number": "", "study_date": "", "study_time": "", "description": "",
                        "modalities": "CT" if i % 2 else "DX", "priority": priority, "state": MILESTONES[reached - 1],
                        "created_at": at, "updated_at": at})
        instances.append({"sop_uid": f"2.25.{i + 1}.1", "sha256": f"{i:064x}", "sop_class_uid": "1.2", "study_uid": f"2.25.{i + 1}",
                          "series_uid": "1.2", "object_key": "k", "size": 1, "site_id": SITES.index(site) + 1,
                          "priority": priority, "calling_ae": "", "edge_received_at": edge, "received_at": at})
        stamps = {"received_at_edge": edge}
        for k, state in enumerate(MILESTONES[:reached]):
            if k:
                at = at + timedelta(seconds=float(gaps[k]))
            stamps[state] = at
            transitions.append({"study_pk": i + 1, "state": state, "at": at,
                                "actor": "dr.wang" if state == "signed" else "", "detail": ""})
        for name, start, end in service.STAGES:
            if start in stamps and end in stamps:
                truth.setdefault(f"{site}|{priority}|{name}", []).append((stamps[end] - stamps[start]).total_seconds())
                truth.setdefault(f"all|{name}", []).append((stamps[end] - stamps[start]).total_seconds())
    with county.sessions() as s:
        for model, rows in ((Site, sites), (Patient, patients), (Study, studies), (StudyTransition, transitions),
                            (Instance, instances)):
            s.execute(insert(model), rows)
        s.commit()
    return truth


@pytest.fixture
def history(county) -> dict[str, list[float]]:
    return seed(county)


def test_figures_per_site_and_priority_match_an_independent_computation(county, history):
    with county.sessions() as s:
        studies = service.load(s, since=T0, until=T0 + timedelta(days=60))
    assert len(studies) == N
    for group_by in ("site", "priority"):
        got = service.figures(studies, group_by=group_by, zone=ZoneInfo("Asia/Shanghai"))
        for key, stages in got.items():
            for name, fig in stages.items():
                values = np.array([v for k, vs in history.items() for v in vs
                                   if k.endswith(f"|{name}") and not k.startswith("all|")
                                   and k.split("|")[0 if group_by == "site" else 1] == key])
                assert fig.n == len(values)
                assert fig.p50_s == pytest.approx(np.percentile(values, 50), abs=1e-3)
                assert fig.p90_s == pytest.approx(np.percentile(values, 90), abs=1e-3)
                assert fig.max_s == pytest.approx(values.max(), abs=1e-3)


def test_stat_is_faster_than_routine_and_unfinished_studies_do_not_count(county, history):
    with county.sessions() as s:
        studies = service.load(s, since=T0, until=T0 + timedelta(days=60))
    by_priority = service.figures(studies, group_by="priority", zone=ZoneInfo("Asia/Shanghai"))
    assert by_priority["stat"]["waiting_for_reader"].p50_s < by_priority["routine"]["waiting_for_reader"].p50_s
    everyone = service.figures(studies, group_by="all", zone=ZoneInfo("Asia/Shanghai"))["all"]
    assert everyone["end_to_end"].n == len(history["all|end_to_end"]) < N


def test_the_api_serves_figures_and_a_csv_for_administrators_only(county, history):
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        window = {"since": T0.isoformat(), "until": (T0 + timedelta(days=60)).isoformat()}
        body = client.get("/api/tat", params={**window, "group_by": "site"}, headers=admin).json()
        assert set(body["groups"]) == set(SITES)
        expected = np.percentile(history["all|end_to_end"], 90)
        everyone = client.get("/api/tat", params={**window, "group_by": "all"}, headers=admin).json()
        assert everyone["groups"]["all"]["end_to_end"]["p90_s"] == pytest.approx(expected, abs=1e-3)
        rows = list(csv.DictReader(io.StringIO(client.get("/api/tat.csv", params=window, headers=admin).text.lstrip("\ufeff"))))
        assert len(rows) == N and rows[0]["site"] in SITES
        reader = login(client, county, "dr.li", Role.RADIOLOGIST)
        assert client.get("/api/tat", headers=reader).status_code == 403


def test_sla_breaches_list_overdue_open_studies_with_their_holder(county):
    (stat,) = queue_studies(county, 1, Priority.STAT)
    (fresh,) = queue_studies(county, 1)
    wang = principal(county, "dr.wang")
    with session_scope(county.sessions) as s:
        reading.claim(session=s, principal=wang, study_uid=stat)
        s.execute(update(Study).where(Study.study_uid == stat).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
        s.commit()
    with TestClient(create_app(county)) as client:
        breaches = client.get("/api/sla/breaches", headers=login(client, county, "boss", Role.ADMIN)).json()
    assert [(b["study_instance_uid"], b["state"], b["held_by"]) for b in breaches] == [(stat, "assigned", "dr.wang")]
    assert 1700 < breaches[0]["overdue_s"] < 1900  # 60 min old, 30 min SLA
    assert fresh not in {b["study_instance_uid"] for b in breaches}


def test_readers_workload_counts_what_they_hold_and_what_they_signed(county):
    from tests.county.test_delivery import signed_study

    with TestClient(create_app(county)) as client:
        signed_study(client, county)  # dr.wang signs one
        (held,) = queue_studies(county, 1)
        with session_scope(county.sessions) as s:
            reading.claim(session=s, principal=principal(county, "dr.li"), study_uid=held)
        rows = client.get("/api/readers/workload", headers=login(client, county, "boss", Role.ADMIN)).json()
    by_reader = {r["reader"]: r for r in rows}
    assert (by_reader["dr.li"]["holding"], by_reader["dr.li"]["signed_7d"]) == (1, 0)
    assert (by_reader["dr.wang"]["holding"], by_reader["dr.wang"]["signed_today"], by_reader["dr.wang"]["signed_7d"]) == (0, 1, 1)


def test_sla_breaches_are_limited_most_overdue_first_with_the_total_in_a_header(county):
    uids = queue_studies(county, 3)
    with session_scope(county.sessions) as s:
        for hours, uid in zip((30, 50, 40), uids, strict=True):
            s.execute(update(Study).where(Study.study_uid == uid).values(created_at=datetime.now(UTC) - timedelta(hours=hours)))
        s.commit()
    with TestClient(create_app(county)) as client:
        response = client.get("/api/sla/breaches", params={"limit": 2}, headers=login(client, county, "boss", Role.ADMIN))
    assert response.headers["X-Total-Count"] == "3"
    assert [b["study_instance_uid"] for b in response.json()] == [uids[1], uids[2]]

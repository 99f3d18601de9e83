"""Dashboard figures computed in the database, on a seeded history of 12,000 studies.

The history has several townships, modalities, priorities and readers, reopened
studies (a second assignment and signature after the first: TAT counts the first) and
an instance the edge received earlier than the first one the county indexed. Truth is
computed here, from the generated times, with numpy; the relay computes from the rows
(PostgreSQL: percentile_cont; SQLite, the embedded default: Python). Both must agree.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from relay.county.app import create_app
from relay.county.db.engine import make_engine, make_sessionmaker
from relay.county.db.migrate import upgrade
from relay.county.db.models import Instance, Patient, Site, Study, StudyTransition
from relay.county.tat import service
from relay.dicom.vocab import Role
from tests.county.test_reports import login

N = 12_000
T0 = datetime(2026, 9, 1, tzinfo=UTC)
ZONE = ZoneInfo("Asia/Shanghai")
SITES = ["qingshan", "huxi", "baishi", "lianhua"]
MODALITIES = ["CT", "DX", "ECG", "US"]
READERS = ["dr.wang", "dr.li", "dr.zhang"]
PRIORITIES = {"stat": 900.0, "urgent": 2400.0, "routine": 7200.0}  # typical wait for a reader, seconds
STATES = ["arrived", "queued", "assigned", "reading", "signed", "delivered", "acknowledged"]
GROUPS = ("site", "modality", "priority", "reader", "day", "week", "all")


def _history(n: int) -> tuple[dict[str, list[dict[str, object]]], list[dict[str, object]]]:
    """Rows to insert and, per study, its true milestones and group keys."""
    rng = np.random.default_rng(6)
    rows: dict[str, list[dict[str, object]]] = defaultdict(list)
    rows["sites"] = [{"id": i + 1, "name": s, "display_name": s, "token_sha256": f"{i:064d}", "created_at": T0}
                     for i, s in enumerate(SITES)]
    truth = []
    tid = 0
    for i in range(n):
        pk, site = i + 1, SITES[i % 4]
        priority = ("stat", "urgent", "routine", "routine", "routine")[i % 5]
        modality, reader = MODALITIES[int(rng.integers(4))], READERS[int(rng.integers(3))]
        edge = T0 + timedelta(seconds=float(i * 480 + rng.integers(0, 400)))  # ~66 days, 180 a day
        gaps = rng.lognormal(np.log([300, 1, PRIORITIES[priority], 120, PRIORITIES[priority] / 3, 45, 900]), 0.6)
        reached = len(STATES) if i % 8 else int(rng.integers(1, len(STATES)))  # 1 in 8 still under way
        stamps: dict[str, datetime] = {"received_at_edge": edge}
        at = edge
        for k, state in enumerate(STATES[:reached]):
            at = at + timedelta(seconds=float(gaps[k]))
            stamps[state] = at
        rows["patients"].append({"id": pk, "patient_id": f"P{pk}", "issuer": site, "name": "", "birth_date": "", "sex": ""})
        rows["studies"].append({"id": pk, "study_uid": f"2.25.9{pk}", "patient_pk": pk, "site_id": i % 4 + 1,
                                "accession_number": "", "study_date": "", "study_time": "", "description": "",
                                "modalities": modality, "priority": priority, "state": STATES[reached - 1],
                                "created_at": stamps["arrived"], "updated_at": at})
        for state in STATES[:reached]:
            tid += 1
            rows["transitions"].append({"id": tid, "study_pk": pk, "state": state, "at": stamps[state],
                                        "actor": reader if state == "signed" else "", "detail": ""})
        if reached == len(STATES) and i % 25 == 0:  # reopened later and read again: TAT keeps the first
            later = at + timedelta(hours=5)
            for state, actor in (("queued", ""), ("assigned", ""), ("reading", ""), ("signed", "dr.other")):
                tid += 1
                rows["transitions"].append({"id": tid, "study_pk": pk, "state": state, "at": later,
                                            "actor": actor, "detail": "reopened"})
        # The first instance the county indexed was not the first the edge received.
        for j, offset in enumerate((30.0, 0.0, 90.0)):
            rows["instances"].append({"sop_uid": f"2.25.9{pk}.{j}", "sha256": f"{pk:060x}{j:04x}", "sop_class_uid": "1.2",
                                      "study_uid": f"2.25.9{pk}", "series_uid": "1.2", "object_key": "k", "size": 1,
                                      "site_id": i % 4 + 1, "priority": priority, "calling_ae": "",
                                      "edge_received_at": edge + timedelta(seconds=offset), "received_at": stamps["arrived"]})
        day = stamps["arrived"].astimezone(ZONE).date()
        truth.append({"stamps": stamps, "site": site, "modality": modality, "priority": priority, "all": "all",
                      "reader": reader if "signed" in stamps else "", "day": day.isoformat(),
                      "week": (day - timedelta(days=day.weekday())).isoformat()})
    return rows, truth


ROWS, TRUTH = _history(N)


def _seed(sessions) -> None:
    with sessions() as s:
        for model, key in ((Site, "sites"), (Patient, "patients"), (Study, "studies"),
                           (StudyTransition, "transitions"), (Instance, "instances")):
            for k in range(0, len(ROWS[key]), 20_000):
                s.execute(insert(model), ROWS[key][k:k + 20_000])
        s.commit()


def expected(group_by: str, since: datetime, until: datetime) -> dict[str, dict[str, tuple[int, float, float, float]]]:
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in TRUTH:
        stamps = t["stamps"]
        assert isinstance(stamps, dict)
        if not since <= stamps["arrived"] < until:
            continue
        for name, a, b in service.STAGES:
            if a in stamps and b in stamps:
                samples[str(t[group_by])][name].append((stamps[b] - stamps[a]).total_seconds())
    return {k: {name: (len(v), float(np.percentile(v, 50)), float(np.percentile(v, 90)), float(np.max(v)))
                for name, v in stages.items()} for k, stages in samples.items()}


def assert_matches(got: dict[str, dict[str, service.StageFigures]], want: dict[str, dict[str, tuple[int, float, float, float]]]) -> None:
    assert set(got) == set(want)
    for key, stages in want.items():
        assert set(got[key]) == set(stages), key
        for name, (n, p50, p90, top) in stages.items():
            fig = got[key][name]
            assert (fig.n, fig.p50_s, fig.p90_s, fig.max_s) == (n, pytest.approx(p50, abs=1e-3),
                                                               pytest.approx(p90, abs=1e-3), pytest.approx(top, abs=1e-3)), (key, name)


@pytest.fixture
def history(county):
    _seed(county.sessions)
    return county


@pytest.mark.parametrize("group_by", GROUPS)
def test_postgresql_figures_match_numpy_for_every_grouping(history, group_by):
    since, until = T0 + timedelta(days=10), T0 + timedelta(days=40)
    with history.sessions() as s:
        got = service.summary(s, since=since, until=until, group_by=group_by, zone=ZONE)
    assert_matches(got, expected(group_by, since, until))


def test_first_signature_names_the_reader_even_after_a_reopened_study_is_signed_again(history):
    with history.sessions() as s:
        readers = service.summary(s, since=T0, until=T0 + timedelta(days=90), group_by="reader", zone=ZONE)
    assert "dr.other" not in readers and set(readers) == {*READERS, ""}


def test_the_api_serves_weekly_figures_and_rejects_an_unknown_grouping(history):
    since, until = T0, T0 + timedelta(days=90)
    with TestClient(create_app(history)) as client:
        admin = login(client, history, "boss", Role.ADMIN)
        window = {"since": since.isoformat(), "until": until.isoformat()}
        body = client.get("/api/tat", params={**window, "group_by": "week"}, headers=admin).json()
        want = expected("week", since, until)
        assert sorted(body["groups"]) == sorted(want)
        monday = sorted(want)[3]
        assert body["groups"][monday]["end_to_end"]["p90_s"] == pytest.approx(want[monday]["end_to_end"][2], abs=1e-3)
        assert client.get("/api/tat", params={"group_by": "month"}, headers=admin).status_code == 422


def test_sqlite_computes_the_same_figures_in_python(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    _seed(sessions)
    since, until = T0 + timedelta(days=5), T0 + timedelta(days=20)
    try:
        with sessions() as s:
            for group_by in ("site", "reader", "week"):
                got = service.summary(s, since=since, until=until, group_by=group_by, zone=ZONE)
                assert_matches(got, expected(group_by, since, until))
    finally:
        engine.dispose()


def test_the_real_path_of_a_study_fills_its_milestones_from_its_transitions(county):
    """Ingest, index, claim, sign, deliver, acknowledge through the real services and routes:
    the triggers keep the study's milestones equal to its first transitions."""
    from sqlalchemy import func, select

    from tests.county.test_delivery import signed_study, site_token

    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county)
        edge = site_token(county)
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        client.post(f"/api/edges/reports/{item['delivery_id']}/delivered", json={"detail": "PACS"}, headers=edge)
        client.post(f"/api/edges/reports/{item['delivery_id']}/acknowledged", json={"by": "技师李"}, headers=edge)
        admin = login(client, county, "boss", Role.ADMIN)
        by_reader = client.get("/api/tat", params={"group_by": "reader"}, headers=admin).json()["groups"]
    with county.sessions() as s:
        study = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        first = {}
        for t in s.execute(select(StudyTransition).where(StudyTransition.study_pk == study.id)
                           .order_by(StudyTransition.id)).scalars():
            first.setdefault(t.state, t)
        edge_min = s.execute(select(func.min(Instance.edge_received_at)).where(Instance.study_uid == uid)).scalar()
    assert (study.tat_arrived_at, study.tat_assigned_at, study.tat_signed_at, study.tat_delivered_at,
            study.tat_acknowledged_at) == tuple(first[k].at for k in ("arrived", "assigned", "signed", "delivered",
                                                                      "acknowledged"))
    assert study.tat_reader == first["signed"].actor == "dr.wang" and study.tat_edge_at == edge_min
    assert by_reader["dr.wang"]["until_acknowledged"]["n"] == 1


def test_every_admin_figure_is_served_on_sqlite_as_relay_up_runs_it(tmp_path: Path):
    from relay.config import Settings
    from relay.county.context import County

    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    embedded = County(Settings(data_dir=tmp_path / "var", database_url=url, broker_url=None))
    try:
        _seed(embedded.sessions)
        with TestClient(create_app(embedded)) as client:
            admin = login(client, embedded, "boss", Role.ADMIN)
            window = {"since": T0.isoformat(), "until": (T0 + timedelta(days=20)).isoformat()}
            body = client.get("/api/tat", params={**window, "group_by": "day"}, headers=admin).json()
            want = expected("day", T0, T0 + timedelta(days=20))
            assert sorted(body["groups"]) == sorted(want)
            day = sorted(want)[5]
            assert body["groups"][day]["reading"]["p50_s"] == pytest.approx(want[day]["reading"][1], abs=1e-3)
            csv_text = client.get("/api/tat.csv", params=window, headers=admin).text
            assert csv_text.startswith("\ufeffstudy_instance_uid,") and len(csv_text.splitlines()) == 1 + sum(
                1 for t in TRUTH if T0 <= t["stamps"]["arrived"] < T0 + timedelta(days=20))  # type: ignore[index]
            for path in ("/api/sla/breaches", "/api/readers/workload", "/api/edges", "/api/audit"):
                assert client.get(path, headers=admin).status_code == 200, path
            assert client.get("/api/audit/export.xml", headers=admin).text.rstrip().endswith("</AuditMessages>")
    finally:
        embedded.close()

"""SLA deadlines by priority and modality (RELAY_SLA_OVERRIDES): parsed strictly, and the
same deadline in the worklist and in the SLA breaches, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update

from relay.config import Settings
from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Study
from relay.county.sla import SlaPolicy
from relay.dicom.vocab import Priority, Role
from tests.county.test_index import index, ingest
from tests.county.test_reports import login
from tests.factories import encode, make_dataset, make_site


def test_overrides_are_read_from_the_environment_case_insensitive(monkeypatch):
    monkeypatch.setenv("RELAY_SLA_OVERRIDES", "ecg:STAT=10, CT:urgent=60.5")
    assert Settings().sla_override_minutes == {("ECG", "stat"): 10.0, ("CT", "urgent"): 60.5}
    assert Settings().sla_override_minutes != {} and Settings(sla_overrides="").sla_override_minutes == {}


@pytest.mark.parametrize("bad", ["ECG=10", "ECG:soon=10", "ECG:stat=0", "ECG:stat=ten", "ECG:stat=-5",
                                 "E/CG:stat=10", "ECG:stat=10,ECG:stat=20", "ECG:stat=inf"])
def test_a_malformed_override_stops_the_start_naming_the_entry(bad):
    with pytest.raises(ValidationError, match="RELAY_SLA_OVERRIDES"):
        Settings(sla_overrides=bad)


def test_a_study_of_several_modalities_gets_the_shortest_deadline_that_applies():
    policy = SlaPolicy(stat=30, overrides={("ECG", "stat"): 10, ("CT", "stat"): 20})
    assert policy.minutes(priority="stat", modalities="CT\\ECG") == 10
    assert policy.minutes(priority="stat", modalities="MR") == 30
    assert policy.minutes(priority="routine", modalities="ECG") == 1440  # only STAT ECG is overridden
    assert policy.minutes(priority="unheard-of", modalities="CT") == 1440  # unknown: routine


@pytest.fixture
def ecg_fast(county: County, settings: Settings) -> Iterator[County]:
    """The same database as ``county``, with STAT ECGs due in 10 minutes, not 30."""
    fast = County(settings.model_copy(update={"sla_overrides": "ECG:stat=10"}))
    yield fast
    fast.close()


def _stat_pair(county: County, age: timedelta) -> dict[str, str]:
    """A STAT ECG and a STAT CT that arrived ``age`` ago."""
    site_id, _ = make_site(county)
    uids = {}
    for modality in ("ECG", "CT"):
        ds = make_dataset(Modality=modality)
        index(county, ingest(county, encode(ds), site_id=site_id, priority=Priority.STAT))
        uids[modality] = str(ds.StudyInstanceUID)
    with session_scope(county.sessions) as s:
        s.execute(update(Study).where(Study.study_uid.in_(list(uids.values())))
                  .values(created_at=datetime.now(UTC) - age))
        s.commit()
    return uids


def test_the_worklist_deadline_follows_the_modality_override(county, ecg_fast):
    uids = _stat_pair(county, timedelta(0))
    with TestClient(create_app(ecg_fast)) as client:
        items = client.get("/api/worklist", headers=login(client, county, "dr.li", Role.RADIOLOGIST)).json()
    due = {i["study_instance_uid"]: datetime.fromisoformat(i["sla_due_at"]) - datetime.fromisoformat(i["arrived_at"])
           for i in items}
    assert due == {uids["ECG"]: timedelta(minutes=10), uids["CT"]: timedelta(minutes=30)}


def test_sla_breaches_use_the_same_modality_deadline(county, ecg_fast):
    uids = _stat_pair(county, timedelta(minutes=20))
    with TestClient(create_app(ecg_fast)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        response = client.get("/api/sla/breaches", headers=admin)
        worklist = {i["study_instance_uid"]: i for i in client.get("/api/worklist", headers=admin).json()}
    (breach,) = response.json()  # the ECG is 10 min late; the CT has 10 min left
    assert breach["study_instance_uid"] == uids["ECG"] and response.headers["X-Total-Count"] == "1"
    assert 540 < breach["overdue_s"] < 660
    assert breach["sla_due_at"] == worklist[uids["ECG"]]["sla_due_at"]
    assert worklist[uids["CT"]]["sla_remaining_s"] > 0 > worklist[uids["ECG"]]["sla_remaining_s"]

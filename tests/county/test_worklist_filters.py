"""GET /api/worklist narrowed by priority, modality, township, state, holder and patient,
on real PostgreSQL; a technician still sees only their own township."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.reading import service as reading
from relay.dicom.vocab import Priority, Role
from tests.county.test_index import index, ingest
from tests.county.test_reading import principal
from tests.county.test_reports import login
from tests.factories import encode, make_dataset, make_site


def _study(county, site_id: int, priority: Priority, **attrs: str) -> str:
    ds = make_dataset(**attrs)
    index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
    return str(ds.StudyInstanceUID)


@pytest.fixture
def seeded(county) -> dict[str, str]:
    """Four open studies at two townships; dr.wang holds one, dr.li another."""
    qingshan, _ = make_site(county, "qingshan")
    huxi, _ = make_site(county, "huxi")
    uids = {
        "ct_stat": _study(county, qingshan, Priority.STAT, PatientName="王^小明", PatientID="QS001",
                          SpecificCharacterSet="ISO_IR 192"),
        "ecg": _study(county, qingshan, Priority.ROUTINE, Modality="ECG", PatientName="Li^Na=李^娜",
                      PatientID="HK00056789", SpecificCharacterSet="ISO_IR 192"),
        "dx_urgent": _study(county, huxi, Priority.URGENT, Modality="DX", PatientName="ZHANG^SAN", PatientID="ZS100"),
        "ct_huxi": _study(county, huxi, Priority.ROUTINE, PatientName="CHEN^SI", PatientID="HX_7%"),
    }
    wang, li = principal(county, "dr.wang"), principal(county, "dr.li")
    with session_scope(county.sessions) as s:
        reading.claim(session=s, principal=wang, study_uid=uids["dx_urgent"])
        reading.claim(session=s, principal=li, study_uid=uids["ct_huxi"])
        reading.open_study(session=s, principal=li, study_uid=uids["ct_huxi"])
    return uids


def _names(client: TestClient, auth: dict[str, str], uids: dict[str, str], **params: str) -> list[str]:
    response = client.get("/api/worklist", params=params, headers=auth)
    assert response.status_code == 200, response.text
    by_uid = {v: k for k, v in uids.items()}
    return [by_uid[item["study_instance_uid"]] for item in response.json()]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["ct_stat", "dx_urgent", "ecg", "ct_huxi"]),
    ({"priority": "urgent"}, ["dx_urgent"]),
    ({"modality": "CT"}, ["ct_stat", "ct_huxi"]),
    ({"modality": "ecg"}, ["ecg"]),
    ({"modality": "C"}, []),  # a code, not a substring of one
    ({"site": "huxi"}, ["dx_urgent", "ct_huxi"]),
    ({"state": "reading"}, ["ct_huxi"]),
    ({"state": "queued", "site": "qingshan"}, ["ct_stat", "ecg"]),
    ({"mine": "true"}, ["dx_urgent"]),
    ({"unassigned": "true"}, ["ct_stat", "ecg"]),
    ({"mine": "true", "unassigned": "true"}, ["ct_stat", "dx_urgent", "ecg"]),
    ({"patient": "李娜"}, ["ecg"]),
    ({"patient": "li na"}, ["ecg"]),
    ({"patient": "小明"}, ["ct_stat"]),
    ({"patient": "zs1"}, ["dx_urgent"]),
    ({"patient": "_7%"}, ["ct_huxi"]),  # LIKE wildcards are plain characters
    ({"patient": "%"}, ["ct_huxi"]),
])
def test_each_filter_narrows_the_worklist_stat_first(county, seeded, params, expected):
    with TestClient(create_app(county)) as client:
        assert _names(client, _as(client, "dr.wang"), seeded, **params) == expected


def _as(client: TestClient, username: str) -> dict[str, str]:
    """A bearer token of a user the fixture made (principal() -> make_user's default password)."""
    body = client.post("/api/auth/token", data={"username": username, "password": "correct-horse-1"}).json()
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_a_technician_filtering_for_another_township_sees_nothing(county, seeded):
    with TestClient(create_app(county)) as client:
        tech = login(client, county, "tech.qs", Role.TECHNICIAN, site="qingshan")
        assert _names(client, tech, seeded) == ["ct_stat", "ecg"]
        assert _names(client, tech, seeded, site="huxi") == []
        assert _names(client, tech, seeded, modality="ECG") == ["ecg"]


def test_an_unknown_filter_value_is_refused_not_ignored(county, seeded):
    with TestClient(create_app(county)) as client:
        reader = login(client, county, "dr.zhao", Role.RADIOLOGIST)
        assert client.get("/api/worklist", params={"priority": "soon"}, headers=reader).status_code == 422
        assert client.get("/api/worklist", params={"state": "signed"}, headers=reader).status_code == 422

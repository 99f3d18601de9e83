"""QIDO-RS matching that must not guess (issue 10, point 13): ModalitiesInStudy matches whole
codes, a malformed StudyDate is a 400 problem, not a wrong range."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.county.context import County
from relay.county.dicomweb import qido
from relay.county.errors import BadRequest
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user


@pytest.fixture
def api(county: County):
    site_id, _ = make_site(county, "qingshan")
    uids = {}
    for modality, date in (("CT", "20261101"), ("OCT", "20261102"), ("MR", "20261103")):
        ds = make_dataset(Modality=modality, StudyDate=date)
        index(county, ingest(county, encode(ds), site_id=site_id))
        uids[modality] = str(ds.StudyInstanceUID)
    password = make_user(county, "reader", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as c:
        token = c.post("/api/auth/token", data={"username": "reader", "password": password}).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        yield c, uids


def found(c: TestClient, **params: str) -> set[str]:
    r = c.get("/dicomweb/studies", params=params)
    assert r.status_code in (200, 204), r.text
    return {s["0020000D"]["Value"][0] for s in (r.json() if r.status_code == 200 else [])}


def test_modalities_in_study_ct_does_not_match_oct(api):
    c, uids = api
    assert found(c, ModalitiesInStudy="CT") == {uids["CT"]}
    assert found(c, ModalitiesInStudy="OCT") == {uids["OCT"]}


def test_modalities_in_study_takes_a_list_of_codes(api):
    c, uids = api
    assert found(c, ModalitiesInStudy="CT,MR") == {uids["CT"], uids["MR"]}


@pytest.mark.parametrize("bad", ["2026-11-01", "20261", "2026110a", "20261301", "20261101-2026",
                                 "20261102-20261101x", "-"])
def test_a_malformed_study_date_is_a_400_problem(api, bad):
    c, _ = api
    r = c.get("/dicomweb/studies", params={"StudyDate": bad})
    assert r.status_code == 400, (bad, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "StudyDate" in r.json()["detail"]


def test_well_formed_study_dates_and_ranges_still_match(api):
    c, uids = api
    assert found(c, StudyDate="20261102") == {uids["OCT"]}
    assert found(c, StudyDate="20261102-") == {uids["OCT"], uids["MR"]}
    assert found(c, StudyDate="-20261101") == {uids["CT"]}
    assert found(c, StudyDate="20261101-20261102") == {uids["CT"], uids["OCT"]}


def test_date_range_rejects_an_upside_down_range():
    with pytest.raises(BadRequest):
        qido.date_range("20261102-20261101")

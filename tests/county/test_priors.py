"""Priors: the same patient's studies from several townships, listed together."""

from __future__ import annotations

from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user


def token(client, county, username, role, site=None):
    password = make_user(county, username, role, site=site)
    return client.post("/api/auth/token", data={"username": username, "password": password}).json()["access_token"]


def test_a_regional_patient_id_links_studies_across_townships_and_a_local_one_does_not(county):
    a, _ = make_site(county, "township-a")
    b, _ = make_site(county, "township-b")
    regional = {"PatientID": "330100199001011234", "IssuerOfPatientID": "CN-ID"}
    older = make_dataset(StudyDate="20250101", **regional)
    newer = make_dataset(StudyDate="20261101", **regional)
    local_same_number = make_dataset(PatientID="330100199001011234", StudyDate="20260101")
    for ds, site in ((older, a), (newer, b), (local_same_number, a)):
        index(county, ingest(county, encode(ds), site_id=site))
    with TestClient(create_app(county)) as client:
        auth = {"Authorization": f"Bearer {token(client, county, 'reader', Role.RADIOLOGIST)}"}
        body = client.get(f"/api/studies/{newer.StudyInstanceUID}/priors", headers=auth).json()
        assert body["issuer"] == "CN-ID"
        assert [(p["study_instance_uid"], p["site"]) for p in body["priors"]] == [
            (older.StudyInstanceUID, "township-a")]
        local = client.get(f"/api/studies/{local_same_number.StudyInstanceUID}/priors", headers=auth).json()
        assert local["issuer"] == "site:township-a" and local["priors"] == []


def test_a_technician_sees_priors_of_their_own_township_only(county):
    a, _ = make_site(county, "township-a")
    b, _ = make_site(county, "township-b")
    regional = {"PatientID": "X1", "IssuerOfPatientID": "CN-ID"}
    mine, theirs = make_dataset(**regional), make_dataset(**regional)
    index(county, ingest(county, encode(mine), site_id=a))
    index(county, ingest(county, encode(theirs), site_id=b))
    with TestClient(create_app(county)) as client:
        auth = {"Authorization": f"Bearer {token(client, county, 'tech', Role.TECHNICIAN, 'township-a')}"}
        assert client.get(f"/api/studies/{mine.StudyInstanceUID}/priors", headers=auth).json()["priors"] == []
        assert client.get(f"/api/studies/{theirs.StudyInstanceUID}/priors", headers=auth).status_code == 404

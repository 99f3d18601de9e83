"""A corrected patient name for the same patient ID + issuer: the index keeps the first name on
the patient, and each study keeps the name its images carry, so the difference reaches the
reader (the study page warns) instead of vanishing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.county.test_priors import token
from tests.factories import encode, make_dataset, make_site

PATIENT = {"PatientID": "HK00056789", "IssuerOfPatientID": "HK", "SpecificCharacterSet": "ISO_IR 192"}


def test_a_later_study_with_a_corrected_name_keeps_it_and_the_priors_say_both(county):
    site, _ = make_site(county, "qingshan")
    first = make_dataset(PatientName="Li^Na=李^娜", StudyDate="20230105", **PATIENT)
    corrected = make_dataset(PatientName="Li^Nan=李^婻", StudyDate="20261123", **PATIENT)
    for ds in (first, corrected):
        index(county, ingest(county, encode(ds), site_id=site))
    with TestClient(create_app(county)) as client:
        auth = {"Authorization": f"Bearer {token(client, county, 'reader', Role.RADIOLOGIST)}"}
        body = client.get(f"/api/studies/{corrected.StudyInstanceUID}/priors", headers=auth).json()
        assert body["patient_name"] == "Li^Na=李^娜"  # the patient row: the first name seen
        assert body["study_patient_name"] == "Li^Nan=李^婻"  # this study: its own
        assert [(p["study_instance_uid"], p["patient_name"]) for p in body["priors"]] == [
            (first.StudyInstanceUID, "Li^Na=李^娜")]
        older = client.get(f"/api/studies/{first.StudyInstanceUID}/priors", headers=auth).json()
        assert older["study_patient_name"] == "Li^Na=李^娜"
        assert older["priors"][0]["patient_name"] == "Li^Nan=李^婻"


def test_the_same_name_everywhere_is_one_name(county):
    site, _ = make_site(county, "qingshan")
    a = make_dataset(PatientName="Li^Na=李^娜", StudyDate="20230105", **PATIENT)
    b = make_dataset(PatientName="Li^Na=李^娜", StudyDate="20261123", **PATIENT)
    for ds in (a, b):
        index(county, ingest(county, encode(ds), site_id=site))
    with TestClient(create_app(county)) as client:
        auth = {"Authorization": f"Bearer {token(client, county, 'reader', Role.RADIOLOGIST)}"}
        body = client.get(f"/api/studies/{b.StudyInstanceUID}/priors", headers=auth).json()
        assert {body["patient_name"], body["study_patient_name"], body["priors"][0]["patient_name"]} == {"Li^Na=李^娜"}


def test_the_report_of_the_corrected_study_goes_back_to_the_township_under_the_corrected_name(county, tmp_path):
    import pydicom

    from relay.county.jobs import DELIVER_TASK
    from tests.county.test_delivery import run_task
    from tests.county.test_report_objects import pdf_text
    from tests.county.test_reports import login

    site, site_token = make_site(county, "qingshan")
    first = make_dataset(PatientName="Li^Na=李^娜", StudyDate="20230105", **PATIENT)
    corrected = make_dataset(PatientName="Li^Nan=李^婻", StudyDate="20261123", **PATIENT)
    for ds in (first, corrected):
        index(county, ingest(county, encode(ds), site_id=site))
    uid = corrected.StudyInstanceUID
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
        assert client.post(f"/api/worklist/{uid}/claim", headers=dr).status_code == 200
        draft = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=dr).json()
        assert client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                           headers=dr).status_code == 200
        run_task(county, DELIVER_TASK, draft["id"])  # the deliver queue builds the SR and PDF
        edge = {"Authorization": f"Bearer {site_token}"}
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        objects = {name: client.get(f"/api/edges/reports/{item['delivery_id']}/objects/{name}", headers=edge).content
                   for name in ("sr", "encapsulated_pdf", "pdf")}
    for name in ("sr", "encapsulated_pdf"):
        (tmp_path / name).write_bytes(objects[name])
        assert pydicom.dcmread(tmp_path / name).PatientName == "Li^Nan=李^婻"
    printed = pdf_text(objects["pdf"], tmp_path)
    assert "李婻" in printed and "李娜" not in printed

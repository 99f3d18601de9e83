"""Who a study belongs to: no patient is ever made of an empty or guessed Patient ID.

Real modalities send empty IDs for emergencies and unregistered patients; such a study
is a patient of its own (无患者ID), never merged with another, never a prior. A later
study under the same ID + issuer with another name keeps its own name wherever it is
shown, and is flagged. Through ingest and indexing of real DICOM on PostgreSQL and S3
(and SQLite for the embedded county)."""

from __future__ import annotations

import io
import uuid

import psycopg
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from relay.config import Settings
from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.migrate import upgrade
from relay.county.db.models import Patient, Study
from relay.county.studies.identity import is_identified, patient_key, shown_issuer
from relay.county.worklist.service import worklist
from relay.dicom.vocab import Role
from tests.conftest import PG_ADMIN_DSN
from tests.county.test_index import index, ingest, reader
from tests.county.test_priors import token
from tests.factories import encode, make_dataset, make_site

GB = {"SpecificCharacterSet": "GB18030"}


def store(county: County, site: int, **attrs: object) -> str:
    ds = make_dataset(**attrs)
    index(county, ingest(county, encode(ds), site_id=site))
    return str(ds.StudyInstanceUID)


def with_raw_patient_id(raw: bytes, **attrs: object) -> bytes:
    """An instance whose PatientID value is ``raw`` (6 bytes), whatever its character set."""
    data = encode(make_dataset(PatientID="ZZ9999", **attrs))
    assert data.count(b"ZZ9999") == 1 and len(raw) == 6
    return data.replace(b"ZZ9999", raw)


def items(county: County) -> dict[str, object]:
    with county.sessions() as s:
        return {i.study_instance_uid: i for i in worklist(session=s, principal=reader())}


def patients(county: County) -> int:
    with county.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Patient)))


def auth(client: TestClient, county: County) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, county, 'reader', Role.RADIOLOGIST)}"}


# --- the key ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pid, issuer", [("", ""), ("   ", ""), ("\ufffd\ufffd01", ""), ("12\x0734", ""),
                                         ("A1", "\ufffdHIS"), ("X" * 65, "")])
def test_no_usable_id_is_the_study_s_own_patient(pid, issuer):
    key = patient_key(patient_id=pid, issuer_of_patient_id=issuer, site_name="qingshan", study_uid="1.2.3")
    assert (key.patient_id, key.issuer, key.identified) == ("", "study:1.2.3", False)


def test_an_id_is_scoped_to_its_issuer_or_its_township_and_no_modality_can_borrow_our_scopes():
    def key(issuer: str) -> tuple[str, str]:
        k = patient_key(patient_id=" P1 ", issuer_of_patient_id=issuer, site_name="qingshan", study_uid="1.2")
        return k.patient_id, k.issuer
    assert key("") == ("P1", "site:qingshan")
    assert key("CN-ID") == ("P1", "CN-ID")
    assert key("site:baima") == ("P1", "dicom:site:baima")  # not baima's own patients
    assert key("study:1.2.9") == ("P1", "dicom:study:1.2.9")
    assert [shown_issuer(i) for i in ("site:qingshan", "study:1.2", "CN-ID", "dicom:site:baima")] == [
        "", "", "CN-ID", "site:baima"]
    assert is_identified("site:qingshan") and not is_identified("study:1.2")


# --- through ingest ---------------------------------------------------------------------------

def test_two_studies_without_a_patient_id_from_one_township_are_two_patients_with_their_own_names(county):
    site, _ = make_site(county, "qingshan")
    a = store(county, site, PatientName="王^小明", PatientID="", **GB)
    b = store(county, site, PatientName="李^娜", PatientID="   ", **GB)
    c = store(county, site, PatientName="张^伟", PatientID=None, **GB)  # no PatientID element at all
    found = items(county)
    assert {uid: (i.patient_name, i.patient_id) for uid, i in found.items()} == {
        a: ("王^小明", ""), b: ("李^娜", ""), c: ("张^伟", "")}
    assert patients(county) == 3
    with TestClient(create_app(county)) as client:
        headers = auth(client, county)
        for uid, name in ((a, "王^小明"), (b, "李^娜"), (c, "张^伟")):
            body = client.get(f"/api/studies/{uid}/priors", headers=headers).json()
            assert body["priors"] == [] and body["patient_name"] == body["study_patient_name"] == name
            assert (body["has_patient_id"], body["patient_id"], body["issuer"]) == (False, "", "")
    assert all(not i.has_patient_id and not i.name_differs for i in found.values())


def test_undecodable_patient_ids_that_read_alike_are_not_one_patient(county):
    site, _ = make_site(county, "qingshan")
    uids = []
    for raw, name in ((b"\xff\xfe01  ", "Wang^Xiaoming"), (b"\xfe\xff01  ", "Li^Na")):
        ds_bytes = with_raw_patient_id(raw, SpecificCharacterSet="ISO_IR 192", PatientName=name)
        index(county, ingest(county, ds_bytes, site_id=site))
        uids.append(pydicom.dcmread(io.BytesIO(ds_bytes)).StudyInstanceUID)
    found = items(county)
    assert [found[u].patient_name for u in uids] == ["Wang^Xiaoming", "Li^Na"]
    with TestClient(create_app(county)) as client:
        headers = auth(client, county)
        assert all(client.get(f"/api/studies/{u}/priors", headers=headers).json()["priors"] == [] for u in uids)
    assert [(found[u].patient_id, found[u].has_patient_id) for u in uids] == [("", False), ("", False)]


def test_a_study_without_an_id_is_no_patient_id_in_qido_with_its_own_name(county):
    site, _ = make_site(county, "qingshan")
    first = store(county, site, PatientName="王^小明", PatientID="", IssuerOfPatientID="CN-ID", **GB)
    second = store(county, site, PatientName="李^娜", PatientID="", **GB)
    with TestClient(create_app(county)) as client:
        headers = {**auth(client, county), "Accept": "application/dicom+json"}
        for uid, name in ((first, "王^小明"), (second, "李^娜")):
            [row] = client.get("/dicomweb/studies", params={"StudyInstanceUID": uid}, headers=headers).json()
            ds = pydicom.Dataset.from_json(row)
            assert (str(ds.PatientName), ds.PatientID, ds.IssuerOfPatientID) == (name, "", "")


def test_a_later_instance_of_a_study_neither_moves_it_nor_adds_a_patient(county):
    site, _ = make_site(county, "qingshan")
    first = make_dataset(PatientName="王^小明", PatientID="", **GB)
    later = make_dataset(StudyInstanceUID=first.StudyInstanceUID, PatientName="王^小明", PatientID="Q7", **GB)
    for ds in (first, later):
        index(county, ingest(county, encode(ds), site_id=site))
    assert patients(county) == 1
    (item,) = items(county).values()
    assert item.patient_id == "" and not item.has_patient_id


def test_a_modality_naming_another_township_as_issuer_does_not_join_its_patients(county):
    a, _ = make_site(county, "qingshan")
    b, _ = make_site(county, "baima")
    local = store(county, b, PatientName="王^小明", PatientID="B100", **GB)
    spoof = store(county, a, PatientName="李^娜", PatientID="B100", IssuerOfPatientID="site:baima", **GB)
    with TestClient(create_app(county)) as client:
        headers = auth(client, county)
        assert client.get(f"/api/studies/{local}/priors", headers=headers).json()["priors"] == []
        assert client.get(f"/api/studies/{spoof}/priors", headers=headers).json()["priors"] == []


# --- the same ID + issuer under another name --------------------------------------------------

def test_a_later_study_with_another_name_is_flagged_and_keeps_its_own_name_on_the_worklist_and_in_qido(county):
    site, _ = make_site(county, "qingshan")
    same = {"PatientID": "Q0042", "IssuerOfPatientID": "QS-HIS", **GB}
    first = store(county, site, PatientName="王^小明", StudyDate="20250101", **same)
    later = store(county, site, PatientName="王^晓明", StudyDate="20261201", **same)
    found = items(county)
    assert (found[first].patient_name, found[later].patient_name) == ("王^小明", "王^晓明")
    assert (found[first].name_differs, found[later].name_differs) == (False, True)
    assert found[later].patient_id == "Q0042" and found[later].has_patient_id
    with TestClient(create_app(county)) as client:
        headers = {**auth(client, county), "Accept": "application/dicom+json"}
        by_id = client.get("/dicomweb/studies", params={"PatientID": "Q0042"}, headers=headers).json()
        names = {pydicom.Dataset.from_json(r).StudyInstanceUID: str(pydicom.Dataset.from_json(r).PatientName)
                 for r in by_id}
        assert names == {first: "王^小明", later: "王^晓明"}
        [series] = client.get(f"/dicomweb/studies/{later}/series", params={"includefield": "PatientName"},
                              headers=headers).json()
        assert str(pydicom.Dataset.from_json(series).PatientName) == "王^晓明"
        [instance] = client.get(f"/dicomweb/studies/{later}/instances", params={"includefield": "00100010"},
                                headers=headers).json()
        assert str(pydicom.Dataset.from_json(instance).PatientName) == "王^晓明"
        priors = client.get(f"/api/studies/{first}/priors", headers=headers).json()
        assert [(p["study_instance_uid"], p["patient_name"]) for p in priors["priors"]] == [(later, "王^晓明")]


def test_trailing_empty_name_components_are_the_same_name(county):
    site, _ = make_site(county, "qingshan")
    same = {"PatientID": "Q0043", **GB}
    store(county, site, PatientName="王^小明", **same)
    later = store(county, site, PatientName="王^小明^^", **same)
    assert items(county)[later].name_differs is False


# --- the embedded county, and the studies merged before ---------------------------------------

def test_studies_without_an_id_are_two_patients_on_sqlite_as_relay_up_runs_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'county.db'}"
    upgrade(url)
    embedded = County(Settings(data_dir=tmp_path / "var", database_url=url, broker_url=None))
    try:
        site, _ = make_site(embedded, "qingshan")
        a = store(embedded, site, PatientName="王^小明", PatientID="", **GB)
        b = store(embedded, site, PatientName="李^娜", PatientID="", **GB)
        found = items(embedded)
        assert [found[u].patient_name for u in (a, b)] == ["王^小明", "李^娜"]
        assert not found[a].has_patient_id and not found[b].has_patient_id
    finally:
        embedded.close()


def _legacy_rows(url: str) -> None:
    """What the code before 0024 left: two townships' studies without an ID merged into one
    patient each, one with an undecodable ID, and a patient with a real ID."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sites (name, display_name, token_sha256, created_at) VALUES "
                          "('qingshan', '', 'a', '2026-01-01'), ('baima', '', 'b', '2026-01-01')"))
        conn.execute(text(
            "INSERT INTO patients (patient_id, issuer, name, birth_date, sex) VALUES "
            "('', 'site:qingshan', '王^小明', '19600101', 'M'), ('', 'site:baima', '赵^六', '', ''), "
            "('Q1', 'site:qingshan', '孙^七', '', 'F'), ('\ufffd01', 'site:qingshan', '周^八', '', '')"))
        sites = dict(conn.execute(text("SELECT name, id FROM sites")).all())
        pks = dict(conn.execute(text("SELECT name, id FROM patients")).all())
        for uid, patient, name in [("1.9.1", "王^小明", "王^小明"), ("1.9.2", "王^小明", "李^娜"),
                                   ("1.9.3", "赵^六", "赵^六"), ("1.9.4", "孙^七", "孙^七"), ("1.9.5", "孙^七", "孙^七"),
                                   ("1.9.6", "周^八", "周^八"), ("1.9.7", "周^八", "吴^九")]:
            conn.execute(text(
                "INSERT INTO studies (study_uid, patient_pk, site_id, accession_number, study_date, study_time, "
                "description, modalities, patient_name, priority, state, created_at, updated_at) VALUES (:uid, "
                ":p, :site, '', '', '', '', 'CT', :name, 'routine', 'queued', '2026-01-01', '2026-01-01')"),
                {"uid": uid, "p": pks[patient], "site": sites["baima" if patient == "赵^六" else "qingshan"],
                 "name": name})
    engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0024_gives_each_merged_study_its_own_patient(tmp_path, pg_url, dialect):
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'county.db'}"
    else:
        name = f"relay_test_0024_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{pg_url.rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(url, "0023")
        _legacy_rows(url)
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(select(Study.study_uid, Patient.patient_id, Patient.issuer, Patient.name,
                                       Patient.birth_date).join(Patient, Patient.id == Study.patient_pk)
                                .order_by(Study.study_uid)).all()
            left = conn.execute(select(func.count()).select_from(Patient)).scalar_one()
        engine.dispose()
        assert [tuple(r) for r in rows] == [
            ("1.9.1", "", "study:1.9.1", "王^小明", "19600101"), ("1.9.2", "", "study:1.9.2", "李^娜", "19600101"),
            ("1.9.3", "", "study:1.9.3", "赵^六", ""), ("1.9.4", "Q1", "site:qingshan", "孙^七", ""),
            ("1.9.5", "Q1", "site:qingshan", "孙^七", ""), ("1.9.6", "", "study:1.9.6", "周^八", ""),
            ("1.9.7", "", "study:1.9.7", "吴^九", "")]
        assert left == 6  # the three shared rows are gone
    finally:
        if dialect == "postgresql":
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

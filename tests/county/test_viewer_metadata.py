"""The viewer's metadata: a whole series from the index in one request, no object read
from the store; and a study's opening audited once with what was viewed, not once per
instance."""

from __future__ import annotations

from pathlib import Path

import pydicom
from fastapi.testclient import TestClient
from sqlalchemy import select

from reader_portal.app import create_app as create_portal_app
from relay.county.app import create_app
from relay.county.db.models import AuditEvent
from relay.dicom.vocab import Role
from tests.county.test_dicomweb import index_all
from tests.county.test_index import ingest
from tests.county.test_reports import login
from tests.factories import make_site, make_user

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"
CT_HEAD = sorted((SAMPLES / "ct_head").glob("*.dcm"))


def _head_ct(county) -> tuple[str, str]:
    site_id, _ = make_site(county, "qingshan")
    for path in CT_HEAD:
        ingest(county, path.read_bytes(), site_id=site_id)
    index_all(county)
    ds = pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


class CountingGets:
    """Counts the store's object reads (measuring, the store itself still answers)."""

    def __init__(self, store) -> None:
        self.keys: list[str] = []
        self.store, self.get = store, store.get

    def __enter__(self) -> CountingGets:
        def counted(key: str) -> bytes:
            self.keys.append(key)
            return self.get(key)
        self.store.get = counted
        return self

    def __exit__(self, *_: object) -> None:
        del self.store.get  # back to the class's method


def test_series_metadata_comes_from_the_index_in_one_request_without_reading_the_store(county):
    study_uid, series_uid = _head_ct(county)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        with CountingGets(county.store) as reads:
            r = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata",
                           headers={**dr, "Accept": "application/dicom+json"})
    assert r.status_code == 200 and reads.keys == []
    body = r.json()
    assert len(body) == len(CT_HEAD)
    first = pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True)
    by_sop = {ds["00080018"]["Value"][0]: ds for ds in body}
    ds = by_sop[str(first.SOPInstanceUID)]
    assert ds["00280010"]["Value"] == [first.Rows] and ds["00280011"]["Value"] == [first.Columns]
    centre = first["WindowCenter"]
    assert ds["00281050"]["Value"][0] == float(centre.value if centre.VM == 1 else centre.value[0])
    assert ds["00083002"]["Value"] == [str(first.file_meta.TransferSyntaxUID)]
    assert ds["7FE00010"]["BulkDataURI"].endswith(f"/instances/{first.SOPInstanceUID}")


def test_instance_and_study_metadata_also_come_from_the_index(county):
    study_uid, series_uid = _head_ct(county)
    sop = str(pydicom.dcmread(CT_HEAD[0], stop_before_pixels=True).SOPInstanceUID)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        with CountingGets(county.store) as reads:
            one = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop}/metadata", headers=dr)
            whole = client.get(f"/dicomweb/studies/{study_uid}/metadata", headers=dr)
    assert reads.keys == []
    assert [d["00080018"]["Value"] for d in one.json()] == [[sop]] and len(whole.json()) == len(CT_HEAD)


def _retrievals(county, study_uid: str) -> list[tuple[str, str]]:
    with county.sessions() as s:
        return [(a, d) for a, d in s.execute(select(AuditEvent.actor, AuditEvent.detail).where(
            AuditEvent.action == "study.retrieve", AuditEvent.object_id == study_uid))]


def test_opening_the_study_page_audits_once_with_what_was_viewed(county):
    """The page, then what its viewer asks for: the series' metadata, each instance's
    metadata (an older page's way), the series again (a second viewport). One row."""
    study_uid, series_uid = _head_ct(county)
    password = make_user(county, "dr.li", Role.RADIOLOGIST)
    with TestClient(create_portal_app(county)) as client:
        client.post("/portal/login", data={"username": "dr.li", "password": password})
        assert client.get(f"/portal/studies/{study_uid}").status_code == 200
        base = f"/dicomweb/studies/{study_uid}/series/{series_uid}"
        metadata = client.get(f"{base}/metadata").json()
        for ds in metadata:
            assert client.get(f"{base}/instances/{ds['00080018']['Value'][0]}/metadata").status_code == 200
        assert client.get(f"{base}/metadata").status_code == 200
    assert _retrievals(county, study_uid) == [("dr.li", f"study page series=1 instances={len(CT_HEAD)}")]


def test_a_viewer_outside_the_portal_is_audited_once_per_study_it_opens(county):
    """OHIF and other DICOMweb viewers load metadata series by series: the first request
    records the opening (with the counts), the rest of that study add no rows."""
    study_uid, series_uid = _head_ct(county)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        for _ in range(3):
            assert client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata", headers=dr).status_code == 200
        assert client.get(f"/dicomweb/studies/{study_uid}/metadata", headers=dr).status_code == 200
    assert _retrievals(county, study_uid) == [("dr.li", f"metadata series=1 instances={len(CT_HEAD)}")]


def test_an_instance_indexed_before_headers_were_kept_is_read_from_the_store(county):
    """Instances indexed before migration 0027 have no header row: their metadata still
    answers, read from the object as before."""
    from relay.county.db.models import InstanceHeader

    study_uid, series_uid = _head_ct(county)
    with county.sessions() as s:
        s.execute(InstanceHeader.__table__.delete())
        s.commit()
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        with CountingGets(county.store) as reads:
            r = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata", headers=dr)
    assert r.status_code == 200 and len(r.json()) == len(CT_HEAD) == len(reads.keys)
    assert all("00280010" in ds for ds in r.json())

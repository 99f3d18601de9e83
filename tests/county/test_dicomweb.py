"""DICOMweb against the real `dicomweb-client`, over real HTTP, on PostgreSQL + S3 + RabbitMQ."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.studies.service import index_instance
from relay.county.db.models import Instance
from relay.county.dicomweb import multipart
from relay.dicom.vocab import Role
from reader_portal.app import create_app
from tests.factories import make_site, make_user
from bench.common import serve_app
from sqlalchemy import select


@pytest.fixture
def server(county: County) -> Iterator[str]:
    """The county app under uvicorn on a free loopback port."""
    with serve_app(create_app(county)) as url:
        yield url


def client_for(base: str, token: str) -> DICOMwebClient:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(url=f"{base}/dicomweb", session=session)


def user_token(base: str, county: County, username: str, role: Role, site: str | None = None) -> str:
    password = make_user(county, username, role, site=site)
    r = requests.post(f"{base}/api/auth/token", data={"username": username, "password": password})
    return str(r.json()["access_token"])


def index_all(county: County) -> None:
    with county.sessions() as s:
        ids = list(s.execute(select(Instance.id).where(Instance.indexed_at.is_(None))).scalars())
    for iid in ids:
        with session_scope(county.sessions) as s:
            index_instance(session=s, store=county.store, instance_id=iid)


@pytest.fixture
def stored(server, county, samples) -> dict[str, object]:
    """The sample set pushed by STOW-RS (site credential), then indexed."""
    _, site_token = make_site(county, "qingshan")
    files = [Path(s["abspath"]) for s in samples]
    response = client_for(server, site_token).store_instances([pydicom.dcmread(f) for f in files])
    index_all(county)
    return {"response": response, "files": files}


def test_stow_then_retrieve_gives_back_the_exact_bytes(server, county, samples):
    """Raw sample files in by STOW-RS; WADO-RS must return them byte for byte."""
    _, site_token = make_site(county, "qingshan")
    files = [Path(s["abspath"]).read_bytes() for s in samples]
    body = b"".join(multipart.stream_parts(files, boundary="x1", part_type="application/dicom"))
    r = requests.post(f"{server}/dicomweb/studies", data=body, headers={
        "Authorization": f"Bearer {site_token}",
        "Content-Type": multipart.content_type("x1", "application/dicom")})
    assert r.status_code == 200 and len(r.json()["00081199"]["Value"]) == len(samples)
    index_all(county)
    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    for sample in samples:
        url = (f"{server}/dicomweb/studies/{sample['study_instance_uid']}/series/"
               f"{sample['series_instance_uid']}/instances/{sample['sop_instance_uid']}")
        (part,) = _parts(requests.get(url, headers=dw._session.headers).content)
        assert hashlib.sha256(part).hexdigest() == sample["sha256"]
        ds = dw.retrieve_instance(sample["study_instance_uid"], sample["series_instance_uid"],
                                  sample["sop_instance_uid"])
        assert str(ds.PatientName) == sample["patient_name"]


def _parts(body: bytes) -> list[bytes]:
    boundary = body.split(b"\r\n", 1)[0]
    return [p.split(b"\r\n\r\n", 1)[1][:-2] for p in body.split(boundary)[1:-1]]


def test_dicomweb_client_stow_is_accepted(stored, samples):
    assert len(stored["response"].ReferencedSOPSequence) == len(samples)


def test_search_finds_studies_by_chinese_name_wildcard_and_date(server, county, samples, stored):
    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    by_name = dw.search_for_studies(search_filters={"PatientName": "李*"})
    assert [pydicom.Dataset.from_json(s).PatientName for s in by_name] == ["Li^Na=李^娜"]
    gb = dw.search_for_studies(search_filters={"PatientName": "王^小明"})
    assert [pydicom.Dataset.from_json(s).PatientID for s in gb] == ["QS00012345"]
    all_studies = dw.search_for_studies()
    assert len(all_studies) == len({s["study_instance_uid"] for s in samples})
    none = dw.search_for_studies(search_filters={"StudyDate": "19000101-19001231"})
    assert none == []


def test_series_instances_and_metadata_describe_the_study(server, county, samples, stored):
    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    ct = [s for s in samples if s["modality"] == "CT"]
    study_uid = ct[0]["study_instance_uid"]
    series = dw.search_for_series(study_uid)
    assert [pydicom.Dataset.from_json(s).NumberOfSeriesRelatedInstances for s in series] == [len(ct)]
    instances = dw.search_for_instances(study_uid)
    assert {pydicom.Dataset.from_json(i).SOPInstanceUID for i in instances} == {s["sop_instance_uid"] for s in ct}
    meta = [pydicom.Dataset.from_json(m) for m in dw.retrieve_study_metadata(study_uid)]
    assert {str(m.PatientName) for m in meta} == {"Li^Na=李^娜"}


def test_a_technician_finds_only_the_studies_of_their_site(server, county, stored):
    make_site(county, "other-town")
    tech = client_for(server, user_token(server, county, "tech", Role.TECHNICIAN, site="other-town"))
    assert tech.search_for_studies() == []


def test_search_and_retrieve_need_a_login(server, stored):
    assert requests.get(f"{server}/dicomweb/studies").status_code == 401


def test_stow_of_a_non_dicom_part_is_reported_failed(server, county):
    _, site_token = make_site(county, "qingshan")
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--b--\r\n"
    r = requests.post(f"{server}/dicomweb/studies", data=body, headers={
        "Authorization": f"Bearer {site_token}",
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]


def _rendered_url(server: str, sample: dict[str, str], suffix: str = "rendered") -> str:
    return (f"{server}/dicomweb/studies/{sample['study_instance_uid']}/series/"
            f"{sample['series_instance_uid']}/instances/{sample['sop_instance_uid']}/{suffix}")


def test_rendered_ct_follows_the_callers_window_and_ecg_comes_as_paper(server, county, samples, stored):
    from PIL import Image

    headers = {"Authorization": f"Bearer {user_token(server, county, 'reader', Role.RADIOLOGIST)}"}
    ct = next(s for s in samples if s["modality"] == "CT")
    brain = requests.get(_rendered_url(server, ct), params={"window": "40,80"}, headers=headers)
    bone = requests.get(_rendered_url(server, ct), params={"window": "400,1800"}, headers=headers)
    assert brain.headers["content-type"] == "image/png" and brain.content != bone.content
    assert Image.open(io.BytesIO(brain.content)).size == (128, 128)
    jpeg = requests.get(_rendered_url(server, ct), headers={**headers, "Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    ecg = next(s for s in samples if s["modality"] == "ECG")
    paper = Image.open(io.BytesIO(requests.get(_rendered_url(server, ecg), headers=headers).content))
    assert paper.size[0] > paper.size[1] > 1000  # landscape paper at 10 px/mm
    thumb = requests.get(_rendered_url(server, ct, "thumbnail"), headers=headers)
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128


def test_an_instance_that_cannot_render_says_why_and_stays_retrievable(server, county):
    from tests.factories import make_dataset, encode

    _, site_token = make_site(county, "qingshan")
    broken = make_dataset(Rows=512, Columns=512)  # header promises far more pixels than it has
    body = b"".join(multipart.stream_parts([encode(broken)], boundary="x2", part_type="application/dicom"))
    requests.post(f"{server}/dicomweb/studies", data=body, headers={
        "Authorization": f"Bearer {site_token}", "Content-Type": multipart.content_type("x2", "application/dicom")})
    index_all(county)
    headers = {"Authorization": f"Bearer {user_token(server, county, 'reader', Role.RADIOLOGIST)}"}
    ids = {"study_instance_uid": broken.StudyInstanceUID, "series_instance_uid": broken.SeriesInstanceUID,
           "sop_instance_uid": broken.SOPInstanceUID}
    r = requests.get(_rendered_url(server, ids), headers=headers)
    assert r.status_code == 422 and r.json()["detail"].startswith("cannot render")
    assert requests.get(_rendered_url(server, ids, "").rstrip("/"), headers=headers).status_code == 200


def test_frames_are_the_stored_pixel_data_of_each_frame(server, county, samples, stored):
    import numpy as np

    dw = client_for(server, user_token(server, county, "reader", Role.RADIOLOGIST))
    us = next(s for s in samples if s["modality"] == "US")
    ds = pydicom.dcmread(us["abspath"])
    (second,) = dw.retrieve_instance_frames(us["study_instance_uid"], us["series_instance_uid"],
                                            us["sop_instance_uid"], frame_numbers=[2])
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert np.array_equal(np.frombuffer(second, np.uint8).reshape(rows, cols, 3), ds.pixel_array[1])
    mr = next(s for s in samples if s["transfer_syntax_uid"] == "1.2.840.10008.1.2.5")
    (rle,) = dw.retrieve_instance_frames(mr["study_instance_uid"], mr["series_instance_uid"],
                                         mr["sop_instance_uid"], frame_numbers=[1],
                                         media_types=(("application/octet-stream", "*"),))
    assert rle == pydicom.encaps.get_frame(pydicom.dcmread(mr["abspath"]).PixelData, 0, number_of_frames=1)
    past_end = requests.get(_rendered_url(server, us, "frames/99"), headers=dw._session.headers)
    assert past_end.status_code == 404


# --- thumbnails: stored at rendering, served per instance, series and study ---------------------

def _render_all(county: County, ids: list[int]) -> None:
    from relay.county.previews.service import render_instance

    for iid in ids:
        with session_scope(county.sessions) as s:
            render_instance(session=s, store=county.store, instance_id=iid)


def _stored_thumbnail_key(county: County, sop_uid: str) -> str:
    from relay.county.db.models import RenderResult

    with county.sessions() as s:
        return str(s.execute(select(RenderResult.thumbnail_key).join(Instance, Instance.id == RenderResult.instance_pk)
                             .where(Instance.sop_uid == sop_uid)).scalar_one())


@pytest.fixture
def ct_series(county: County) -> dict[str, object]:
    """A rendered CT series of three instances numbered 1-3 (stored 3, 1, 2), each its own grey."""
    from pydicom.uid import generate_uid
    from tests.county.test_index import index, ingest
    from tests.factories import encode, make_dataset

    site_id, _ = make_site(county, "qingshan")
    study, series, sops, ids = generate_uid(), generate_uid(), {}, []
    for number in (3, 1, 2):
        ds = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number,
                          PixelData=bytes([number * 40, 0]) * 16)
        ids.append(ingest(county, encode(ds), site_id=site_id))
        index(county, ids[-1])
        sops[number] = str(ds.SOPInstanceUID)
    _render_all(county, ids)
    return {"study": study, "series": series, "sops": sops}


def _reader_headers(server: str, county: County) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(server, county, 'reader', Role.RADIOLOGIST)}"}


def test_a_series_thumbnail_is_the_stored_thumbnail_of_its_middle_instance(server, county, ct_series):
    from relay.county.db.models import RenderResult

    headers = _reader_headers(server, county)
    series_url = f"{server}/dicomweb/studies/{ct_series['study']}/series/{ct_series['series']}"
    middle = ct_series["sops"][2]
    r = requests.get(f"{series_url}/thumbnail", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == county.store.get(_stored_thumbnail_key(county, middle))
    # what is served is the stored object, not a fresh rendering: point the row at other bytes
    marker = b"\xff\xd8 a thumbnail stored elsewhere"
    county.store.put("derived/test/marker.jpg", marker, sha256=hashlib.sha256(marker).hexdigest())
    with session_scope(county.sessions) as s:
        row = s.execute(select(RenderResult).join(Instance, Instance.id == RenderResult.instance_pk)
                        .where(Instance.sop_uid == middle)).scalar_one()
        row.thumbnail_key = "derived/test/marker.jpg"
        s.commit()
    assert requests.get(f"{series_url}/thumbnail", headers=headers).content == marker
    assert requests.get(f"{series_url}/instances/{middle}/thumbnail", headers=headers).content == marker
    assert requests.get(f"{server}/dicomweb/studies/{ct_series['study']}/thumbnail", headers=headers).content == marker
    first = requests.get(f"{series_url}/instances/{ct_series['sops'][1]}/thumbnail", headers=headers)
    assert first.content == county.store.get(_stored_thumbnail_key(county, ct_series["sops"][1])) != marker


def test_an_ecg_series_thumbnail_is_its_paper_made_small(server, county, samples, stored):
    from PIL import Image

    ecg = next(s for s in samples if s["modality"] == "ECG")
    with county.sessions() as s:
        iid = s.execute(select(Instance.id).where(Instance.sop_uid == ecg["sop_instance_uid"])).scalar_one()
    headers = _reader_headers(server, county)
    url = f"{server}/dicomweb/studies/{ecg['study_instance_uid']}/series/{ecg['series_instance_uid']}/thumbnail"
    unrendered = requests.get(url, headers=headers)  # not rendered yet: drawn on request
    _render_all(county, [iid])
    served = requests.get(url, headers=headers)
    assert served.content == county.store.get(_stored_thumbnail_key(county, ecg["sop_instance_uid"]))
    for r in (unrendered, served):
        width, height = Image.open(io.BytesIO(r.content)).size
        assert r.status_code == 200 and width == 128 and 80 < height < width  # landscape paper


def test_a_series_that_cannot_render_says_why_and_an_unknown_one_is_404(server, county):
    from tests.county.test_index import index, ingest
    from tests.factories import encode, make_dataset

    site_id, _ = make_site(county, "qingshan")
    broken = make_dataset(Rows=512, Columns=512)  # header promises far more pixels than it has
    iid = ingest(county, encode(broken), site_id=site_id)
    index(county, iid)
    headers = _reader_headers(server, county)
    study_url = f"{server}/dicomweb/studies/{broken.StudyInstanceUID}"
    for _ in range(2):  # before and after the render task has noted the failure
        r = requests.get(f"{study_url}/series/{broken.SeriesInstanceUID}/thumbnail", headers=headers)
        assert r.status_code == 422 and r.json()["detail"].startswith("cannot render")
        assert requests.get(f"{study_url}/thumbnail", headers=headers).status_code == 422
        _render_all(county, [iid])
    assert requests.get(f"{study_url}/series/1.2.3.4/thumbnail", headers=headers).status_code == 404


def test_thumbnails_follow_the_wado_permissions(server, county, ct_series):
    url = f"{server}/dicomweb/studies/{ct_series['study']}/series/{ct_series['series']}/thumbnail"
    assert requests.get(url).status_code == 401
    make_site(county, "other-town")
    tech = user_token(server, county, "tech", Role.TECHNICIAN, site="other-town")
    assert requests.get(url, headers={"Authorization": f"Bearer {tech}"}).status_code == 404

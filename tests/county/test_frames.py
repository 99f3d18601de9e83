"""WADO-RS frames honour Accept and slice BitsAllocated=1 frames at bit offsets (issue 10,
point 13); real PostgreSQL, S3 and the county app."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from relay.county.app import create_app
from relay.county.context import County
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user

ROWS = COLS = 3  # 9 bits a frame: frames 2 and 3 start inside a byte
FRAMES = 3


def bit_frames() -> tuple[bytes, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 2, size=ROWS * COLS, dtype=np.uint8) for _ in range(FRAMES)]
    packed = np.packbits(np.concatenate(frames), bitorder="little").tobytes()
    return packed + (b"\0" if len(packed) % 2 else b""), frames


@pytest.fixture
def api(county: County):
    site_id, _ = make_site(county, "qingshan")
    packed, frames = bit_frames()
    seg = make_dataset(Modality="SEG", Rows=ROWS, Columns=COLS, BitsAllocated=1, BitsStored=1, HighBit=0,
                       NumberOfFrames=FRAMES, PixelData=packed, SOPInstanceUID=generate_uid())
    seg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    index(county, ingest(county, encode(seg), site_id=site_id))
    ct = make_dataset(NumberOfFrames=2, PixelData=bytes(range(64)))  # 4x4x16 bits, two frames
    index(county, ingest(county, encode(ct), site_id=site_id))
    password = make_user(county, "reader", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as c:
        token = c.post("/api/auth/token", data={"username": "reader", "password": password}).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        yield c, seg, ct, frames


def url(ds, frames: str) -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/frames/{frames}")


def parts(r) -> list[bytes]:
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = r.content.split(b"--" + boundary.encode())[1:-1]
    return [c.split(b"\r\n\r\n", 1)[1][:-2] for c in chunks]


def test_bits_allocated_1_frames_are_cut_at_bit_offsets_and_packed(api):
    c, seg, _, frames = api
    r = c.get(url(seg, "1,2,3"), headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200, r.text
    got = parts(r)
    assert [len(p) for p in got] == [2, 2, 2]  # ceil(9 / 8)
    for part, expected in zip(got, frames):
        bits = np.unpackbits(np.frombuffer(part, np.uint8), bitorder="little")[:ROWS * COLS]
        assert bits.tolist() == expected.tolist()


def test_native_frames_are_rows_times_columns_times_bytes(api):
    c, _, ct, _ = api
    r = c.get(url(ct, "2"), headers={"Accept": "multipart/related; type=application/octet-stream"})
    assert parts(r) == [bytes(range(32, 64))]


def test_a_single_frame_as_plain_octet_stream(api):
    c, _, ct, _ = api
    r = c.get(url(ct, "1"), headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/octet-stream")
    assert r.content == bytes(range(32))


@pytest.mark.parametrize("accept", ["image/jpeg", 'multipart/related; type="image/jp2"', "text/html",
                                    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50'])
def test_an_unsupported_accept_is_a_406_problem(api, accept):
    c, _, ct, _ = api
    r = c.get(url(ct, "1"), headers={"Accept": accept})
    assert r.status_code == 406, (accept, r.status_code)
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("accept", ["*/*", "multipart/related", 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
                                    "image/jpeg, multipart/related; type=application/octet-stream; q=0.5"])
def test_accepted_forms_answer_multipart(api, accept):
    c, _, ct, _ = api
    r = c.get(url(ct, "1,2"), headers={"Accept": accept})
    assert r.status_code == 200, (accept, r.text)
    assert parts(r) == [bytes(range(32)), bytes(range(32, 64))]

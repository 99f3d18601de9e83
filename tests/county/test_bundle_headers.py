"""A malformed bundle frame header is the edge's mistake: a 422 problem, never a 500
(issue 10, point 13), and the bundle is dropped so that the edge sends it again."""

from __future__ import annotations

import io
import json
import struct
import uuid

import pytest
from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.dicom.bundle import BundleError, iter_frames
from tests.county.test_bundles import auth, send
from tests.factories import make_dataset, encode, make_site, sha256


def frame(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + data


def good_header(uid: str, data: bytes) -> dict:
    return {"sop_uid": uid, "sha256": sha256(data), "size": len(data), "priority": "routine",
            "calling_ae": "CT01", "received_at": "2026-11-23T01:00:00+00:00", "late": False}


BAD = {
    "size as text": {"size": "many"},
    "negative size": {"size": -1},
    "priority unknown": {"priority": "asap"},
    "received_at a number": {"received_at": 5},
    "calling_ae a list": {"calling_ae": ["CT01"]},
    "late as text": {"late": "yes"},
    "sop_uid a number": {"sop_uid": 12},
}


@pytest.mark.parametrize("change", BAD.values(), ids=list(BAD))
def test_a_malformed_frame_header_is_a_bundle_error(change):
    data = encode(make_dataset())
    body = frame({**good_header("1.2.3", data), **change}, data)
    with pytest.raises(BundleError):
        list(iter_frames(io.BytesIO(body), encoding="identity"))


@pytest.mark.parametrize("change", BAD.values(), ids=list(BAD))
def test_completing_a_bundle_with_a_malformed_frame_header_is_a_422_problem(county, change):
    _, token = make_site(county)
    ds = make_dataset()
    data = encode(ds)
    header = {**good_header(str(ds.SOPInstanceUID), data), **change}
    body = frame(header, data)
    spec = {"bundle_id": str(uuid.uuid4()), "size": len(body), "sha256": sha256(body), "encoding": "identity",
            "priority": "routine", "instances": [{"sop_uid": str(ds.SOPInstanceUID), "sha256": sha256(data),
                                                  "size": len(data)}]}
    with TestClient(create_app(county), raise_server_exceptions=False) as client:
        send(client, token, spec, body)
        r = client.post(f"/api/ingest/bundles/{spec['bundle_id']}/complete", headers=auth(token))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert client.get(f"/api/ingest/bundles/{spec['bundle_id']}", headers=auth(token)).status_code == 404

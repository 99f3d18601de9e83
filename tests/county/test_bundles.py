"""Bundle uploads (many instances, zstd, resumable chunks) on real PostgreSQL, S3, RabbitMQ."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from relay.county.app import create_app
from relay.county.db.models import BundleChunk, Instance
from relay.dicom import wire
from relay.dicom.bundle import FrameHeader, encode_bundle
from tests.county.test_ingest import queued_messages
from tests.factories import make_instance, make_site, sha256


@pytest.fixture
def client(county) -> Iterator[TestClient]:
    with TestClient(create_app(county)) as c:
        yield c


def build(instances: list[bytes], *, encoding: str = "zstd") -> tuple[dict, bytes]:
    """The POST body announcing a bundle, and the encoded bundle bytes."""
    import pydicom

    frames = []
    for data in instances:
        uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
        frames.append((FrameHeader(uid, sha256(data), len(data), "routine", "CT01",
                                   "2026-11-23T01:00:00+00:00"), data))
    out = io.BytesIO()
    encode_bundle(frames, encoding=encoding, out=out)
    body = out.getvalue()
    spec = {"bundle_id": str(uuid.uuid4()), "size": len(body), "sha256": sha256(body),
            "encoding": encoding, "priority": "routine",
            "instances": [{"sop_uid": h.sop_uid, "sha256": h.sha256, "size": h.size} for h, _ in frames]}
    return spec, body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def patch(client, token, bundle_id, offset, chunk):
    return client.patch(f"{wire.BUNDLES_PATH}/{bundle_id}", content=chunk, headers={
        **auth(token), wire.HEADER_UPLOAD_OFFSET: str(offset), "Content-Type": wire.CHUNK_MEDIA_TYPE})


def send(client, token, spec, body, *, chunk=4096) -> None:
    r = client.post(wire.BUNDLES_PATH, json=spec, headers=auth(token))
    offset = r.json()["received"]
    while offset < len(body):
        r = patch(client, token, spec["bundle_id"], offset, body[offset:offset + chunk])
        assert r.status_code == 204, r.text
        offset = int(r.headers[wire.HEADER_UPLOAD_OFFSET])


def test_a_chunked_zstd_bundle_lands_every_instance_byte_exact_and_enqueued(client, county):
    _, token = make_site(county)
    instances = [make_instance() for _ in range(5)]
    spec, body = build(instances)
    send(client, token, spec, body, chunk=len(body) // 3 + 1)
    r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 200, r.text
    assert [x["outcome"] for x in r.json()["results"]] == ["stored"] * 5
    with county.sessions() as s:
        held = {i.sha256: i.object_key for i in s.execute(select(Instance)).scalars()}
        assert s.scalar(select(func.count()).select_from(BundleChunk)) == 0  # staging dropped
    assert {county.store.get(held[sha256(d)]) for d in instances} == set(instances)
    assert queued_messages(county) == 5


def test_after_a_cut_the_edge_resumes_where_the_county_stopped(client, county):
    _, token = make_site(county)
    spec, body = build([make_instance() for _ in range(3)], encoding="identity")
    client.post(wire.BUNDLES_PATH, json=spec, headers=auth(token))
    assert patch(client, token, spec["bundle_id"], 0, body[:1000]).status_code == 204
    again = client.post(wire.BUNDLES_PATH, json=spec, headers=auth(token))
    assert again.json()["received"] == 1000
    stale = patch(client, token, spec["bundle_id"], 0, body[:1000])
    assert stale.status_code == 409 and stale.headers[wire.HEADER_UPLOAD_OFFSET] == "1000"
    assert client.get(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}", headers=auth(token)).json()["received"] == 1000
    send(client, token, spec, body)
    assert client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token)).status_code == 200


def test_completing_twice_answers_the_same_and_changes_nothing(client, county):
    _, token = make_site(county)
    spec, body = build([make_instance(), make_instance()])
    send(client, token, spec, body)
    url = f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete"
    first, second = client.post(url, headers=auth(token)), client.post(url, headers=auth(token))
    assert first.json()["results"] == second.json()["results"]
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 2


def test_corrupt_bytes_are_refused_and_the_bundle_can_be_sent_again(client, county):
    _, token = make_site(county)
    spec, body = build([make_instance() for _ in range(2)], encoding="identity")
    broken = body[:-1] + bytes([body[-1] ^ 0xFF])
    send(client, token, spec, broken)
    r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 422
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(BundleChunk)) == 0
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    send(client, token, spec, body)
    assert client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token)).status_code == 200


def test_instances_not_announced_make_the_bundle_unprocessable(client, county):
    _, token = make_site(county)
    spec, body = build([make_instance()])
    spec["instances"][0]["sha256"] = "0" * 64
    send(client, token, spec, body)
    r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 422 and "announced" in r.json()["detail"]


def test_another_site_cannot_see_or_feed_a_bundle(client, county):
    _, token_a = make_site(county, "township-a")
    _, token_b = make_site(county, "township-b")
    spec, body = build([make_instance()])
    client.post(wire.BUNDLES_PATH, json=spec, headers=auth(token_a))
    assert client.get(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}", headers=auth(token_b)).status_code == 404
    assert patch(client, token_b, spec["bundle_id"], 0, body).status_code == 404


def test_an_incomplete_bundle_cannot_be_completed(client, county):
    _, token = make_site(county)
    spec, body = build([make_instance()], encoding="identity")
    client.post(wire.BUNDLES_PATH, json=spec, headers=auth(token))
    patch(client, token, spec["bundle_id"], 0, body[:10])
    r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 409


def test_two_versions_of_one_uid_in_a_bundle_keep_the_first_and_set_the_second_aside(client, county):
    from tests.factories import encode, make_dataset

    _, token = make_site(county)
    first = make_dataset(PatientID="A")
    other = make_dataset(PatientID="B", SOPInstanceUID=first.SOPInstanceUID,
                         StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID)
    spec, body = build([encode(first), encode(other)])
    send(client, token, spec, body)
    r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 200, r.text
    assert [x["outcome"] for x in r.json()["results"]] == ["stored", "quarantined"]

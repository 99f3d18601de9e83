"""The ingest endpoint on real PostgreSQL, SeaweedFS S3 and RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from relay.county.app import create_app
from relay.county.context import County
from relay.county.db.models import Instance, QuarantinedInstance, Site
from relay.county.jobs import queue_name
from relay.dicom import wire
from relay.dicom.keys import instance_key
from tests.factories import make_dataset, encode, make_instance, make_site, sha256


@pytest.fixture
def client(county: County) -> Iterator[TestClient]:
    with TestClient(create_app(county)) as c:
        yield c


@pytest.fixture
def site_token(county: County) -> str:
    return make_site(county)[1]


def upload(client: TestClient, token: str, data: bytes, **headers: str) -> object:
    h = {"Authorization": f"Bearer {token}", wire.HEADER_SHA256: sha256(data),
         "Content-Type": wire.DICOM_MEDIA_TYPE, **headers}
    return client.post(wire.INGEST_PATH, content=data, headers=h)


def queued_messages(county: County) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(county.settings.resolved_broker_url))
    try:
        q = conn.channel().queue_declare(queue_name(county.settings, "ingest"), passive=True)
        return int(q.method.message_count)
    finally:
        conn.close()


def conflicting_pair() -> tuple[object, bytes, bytes]:
    """An instance, its bytes, and other bytes under the same SOP Instance UID."""
    first = make_dataset(PatientID="A")
    other = make_dataset(PatientID="B", SOPInstanceUID=first.SOPInstanceUID,
                         StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID)
    return first, encode(first), encode(other)


def test_new_instance_is_stored_byte_exact_indexed_and_enqueued(client, county, site_token):
    ds = make_dataset()
    data = encode(ds)
    r = upload(client, site_token, data, **{wire.HEADER_PRIORITY: "stat", wire.HEADER_CALLING_AE: "CT01"})
    assert r.status_code == 200, r.text
    assert r.json() == {"outcome": "stored", "sop_instance_uid": ds.SOPInstanceUID, "sha256": sha256(data)}
    key = instance_key(study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID,
                       sop_uid=ds.SOPInstanceUID, sha256=sha256(data))
    assert county.store.get(key) == data
    with county.sessions() as s:
        row = s.execute(select(Instance)).scalar_one()
        assert (row.priority, row.calling_ae, row.object_key) == ("stat", "CT01", key)
    assert queued_messages(county) == 1


def test_same_bytes_again_is_a_harmless_duplicate(client, county, site_token):
    data = make_instance()
    assert upload(client, site_token, data).json()["outcome"] == "stored"
    assert upload(client, site_token, data).json()["outcome"] == "duplicate"
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1


def test_same_uid_with_other_bytes_is_quarantined_and_original_kept(client, county, site_token):
    first, original, conflicting = conflicting_pair()
    upload(client, site_token, original)
    r = upload(client, site_token, conflicting)
    assert r.status_code == 200 and r.json()["outcome"] == "quarantined"
    with county.sessions() as s:
        held = s.execute(select(Instance)).scalar_one()
        aside = s.execute(select(QuarantinedInstance)).scalar_one()
    assert held.sha256 == sha256(original) and county.store.get(held.object_key) == original
    assert aside.sha256 == sha256(conflicting) and county.store.get(aside.object_key) == conflicting


def test_body_not_matching_its_digest_is_refused(client, county, site_token):
    data = make_instance()
    r = upload(client, site_token, data, **{wire.HEADER_SHA256: sha256(data + b"x")})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0


@pytest.mark.parametrize("payload", [b"not dicom at all", make_instance(SOPInstanceUID=None)],
                         ids=["non-dicom", "no-sop-instance-uid"])
def test_unusable_payload_gets_a_clear_problem(client, county, site_token, payload):
    r = upload(client, site_token, payload)
    assert r.status_code == 422
    assert r.json()["title"] == "Unprocessable content" and r.json()["detail"]


def test_unknown_or_revoked_site_is_refused(client, county, site_token):
    data = make_instance()
    assert upload(client, "site_forged", data).status_code == 401
    assert client.post(wire.INGEST_PATH, content=data).status_code == 401
    with county.sessions() as s:
        site = s.execute(select(Site)).scalar_one()
        site.revoked_at = func.now()
        s.commit()
    assert upload(client, site_token, data).status_code == 403
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0


def test_the_administrator_sees_the_conflict_beside_the_held_bytes(client, county, site_token):
    from relay.dicom.vocab import Role
    from tests.factories import make_user

    first, original, conflicting = conflicting_pair()
    upload(client, site_token, original)
    upload(client, site_token, conflicting)
    password = make_user(county, "boss", Role.ADMIN)
    token = client.post("/api/auth/token", data={"username": "boss", "password": password}).json()["access_token"]
    (row,) = client.get("/api/quarantine", headers={"Authorization": f"Bearer {token}"}).json()
    assert row["sop_instance_uid"] == first.SOPInstanceUID and row["site"] == "township-a"
    assert (row["sha256"], row["held_sha256"]) == (sha256(conflicting), sha256(original))
    reader_pw = make_user(county, "reader", Role.RADIOLOGIST)
    reader = client.post("/api/auth/token", data={"username": "reader", "password": reader_pw}).json()["access_token"]
    assert client.get("/api/quarantine", headers={"Authorization": f"Bearer {reader}"}).status_code == 403

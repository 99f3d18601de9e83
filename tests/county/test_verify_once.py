"""Each instance is verified once at the county's door and its header read once: the
SHA-256 of its bytes is computed once per ingest call (single upload and bundle alike),
the index task of a normally ingested instance reads nothing back from the store, and a
redelivered task with no kept header still indexes it from the object (at least once)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select

from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import Instance, InstanceHeader, Series, Site
from relay.county.ingest.service import Upload, ingest_instance
from relay.county.studies.service import index_instance
from relay.dicom.vocab import Priority
from tests.factories import encode, make_dataset, make_site, sha256


@contextmanager
def hashes_in_relay(data: bytes) -> Iterator[list[str]]:
    """The relay modules that ran SHA-256 over ``data`` while inside (the S3 client's own
    request signing is the protocol's, not ours, and is not counted)."""
    real: Callable[..., Any] = hashlib.sha256
    callers: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        if args and args[0] is data or (args and bytes(args[0]) == data):
            module = inspect.getmodule(inspect.stack()[1].frame)
            name = module.__name__ if module else "?"
            if name.startswith("relay."):
                callers.append(name)
        return real(*args, **kwargs)

    hashlib.sha256 = counting  # type: ignore[assignment]
    try:
        yield callers
    finally:
        hashlib.sha256 = real  # type: ignore[assignment]


@contextmanager
def store_reads(county: County) -> Iterator[list[str]]:
    """The keys read from the county's object store while inside."""
    store: Any = county.store
    real = store.get
    keys: list[str] = []

    def counting(key: str) -> bytes:
        keys.append(key)
        return real(key)

    store.get = counting
    try:
        yield keys
    finally:
        store.get = real


def _ingest(county: County, data: bytes, site_id: int) -> int:
    with session_scope(county.sessions) as s:
        site = s.get(Site, site_id)
        up = Upload(data=data, claimed_sha256=sha256(data), priority=Priority.ROUTINE, calling_ae="M1",
                    edge_received_at=None)
        result = ingest_instance(session=s, store=county.store, site=site, upload=up, max_bytes=10**8)
    assert result.instance_id is not None
    return result.instance_id


def _index(county: County, instance_id: int) -> None:
    with session_scope(county.sessions) as s:
        result = index_instance(session=s, store=county.store, instance_id=instance_id)
    assert result is not None and not result.already_indexed


def test_one_ingest_hashes_the_bytes_once(county):
    site_id, _ = make_site(county)
    data = encode(make_dataset())
    with hashes_in_relay(data) as callers:
        _ingest(county, data, site_id)
    assert callers == ["relay.dicom.verified"]


def test_the_index_task_of_a_normally_ingested_instance_reads_nothing_from_the_store(county):
    site_id, _ = make_site(county)
    data = encode(make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明", PatientID="G1",
                               SeriesDescription="胸部"))
    iid = _ingest(county, data, site_id)
    with store_reads(county) as reads:
        _index(county, iid)
    assert reads == []
    with county.sessions() as s:
        inst = s.get(Instance, iid)
        series = s.get(Series, inst.series_pk)
        assert series.description == "胸部" and inst.indexed_at is not None


def test_a_redelivered_task_with_no_kept_header_indexes_from_the_object(county):
    site_id, _ = make_site(county)
    data = encode(make_dataset(SpecificCharacterSet="GB18030", PatientName="王^小明", PatientID="G2",
                               SeriesDescription="胸部"))
    iid = _ingest(county, data, site_id)
    with county.sessions() as s:  # as after a crash between the object and the kept header
        s.execute(delete(InstanceHeader).where(InstanceHeader.instance_pk == iid))
        s.commit()
    with store_reads(county) as reads:
        _index(county, iid)
    with county.sessions() as s:
        inst = s.get(Instance, iid)
        assert len(reads) == 1 and reads[0] == inst.object_key
        assert s.get(Series, inst.series_pk).description == "胸部"
        kept = s.execute(select(InstanceHeader.header_json).where(InstanceHeader.instance_pk == iid)).scalar_one()
    assert "胸部" in kept


def test_the_signed_sr_and_pdf_are_stored_once_as_instances_the_delivery_points_at(county, monkeypatch):
    import json

    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from relay.county.db.models import Report, ReportDelivery
    from relay.county.worker import DELIVER_TASK
    from tests.county.test_delivery import run_task, signed_study

    # Patched on the class: the Celery task may be bound to another County of this database.
    store_type: Any = type(county.store)
    puts: list[str] = []
    real_put, real_verified = store_type.put, getattr(store_type, "put_verified", None)

    def put(self: Any, key: str, data: bytes, *, sha256: str) -> None:
        puts.append(key)
        real_put(self, key, data, sha256=sha256)

    def put_verified(self: Any, key: str, instance: Any) -> None:
        puts.append(key)
        assert real_verified is not None
        real_verified(self, key, instance)

    with TestClient(create_app(county)) as client:
        signed_study(client, county, deliver=False)
        with county.sessions() as s:
            report_id = s.execute(select(Report.id)).scalar_one()
        monkeypatch.setattr(store_type, "put", put)
        monkeypatch.setattr(store_type, "put_verified", put_verified, raising=False)
        run_task(county, DELIVER_TASK, report_id)
        monkeypatch.undo()
    with county.sessions() as s:
        keys = json.loads(s.execute(select(ReportDelivery.object_keys_json)).scalar_one())
        instance_keys = set(s.execute(select(Instance.object_key).where(Instance.calling_ae == "COUNTY_REPORT")).scalars())
    assert sorted(puts) == sorted({keys["pdf"], keys["sr"], keys["encapsulated_pdf"]})
    assert {keys["sr"], keys["encapsulated_pdf"]} == instance_keys


def test_completing_a_bundle_hashes_each_instance_once(county):
    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from relay.dicom import wire
    from tests.county.test_bundles import auth, build, send
    from tests.factories import make_instance

    _, token = make_site(county)
    data = make_instance()
    spec, body = build([data], encoding="identity")
    with TestClient(create_app(county)) as client:
        send(client, token, spec, body)
        with hashes_in_relay(data) as callers:
            r = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers=auth(token))
    assert r.status_code == 200, r.text
    assert callers == ["relay.dicom.bundle"]  # the frame's check; the proof is carried from there


def test_a_stow_part_is_hashed_once(county):
    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from tests.factories import make_instance

    _, token = make_site(county)
    data = make_instance()
    boundary = "relay-test-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    with TestClient(create_app(county)) as client, hashes_in_relay(data) as callers:
        r = client.post("/dicomweb/studies", content=body, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text
    assert callers == ["relay.dicom.verified"]


def test_one_ingest_and_its_indexing_parse_the_header_once(county, monkeypatch):
    import pydicom

    site_id, _ = make_site(county)
    data = encode(make_dataset())
    real = pydicom.dcmread
    parses: list[int] = []

    def counting(fp: Any, *args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    _index(county, _ingest(county, data, site_id))
    assert len(parses) == 1  # at ingest (routing UIDs by a direct walk, header kept as JSON)

"""Issue 13 row 13, CI size: hostile UIDs, names and preambles sent to the edge over C-STORE
(pynetdicom and DCMTK storescu) and to the county over the ingest API, the bundle API and
STOW-RS. Every file under the test's folders and every key of the test's own bucket is
listed before and after: nothing is written outside the edge's spool or outside the
store's key prefixes; each hostile instance is refused with a DICOM failure status or a 4xx
problem, or stored under a safe key with its bytes unchanged; an instance accepted before
is untouched."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import config, dcmread
from pynetdicom import AE

from relay.config import Settings
from relay.county.app import create_app
from relay.county.context import County
from relay.county.dicomweb import multipart
from relay.dicom import wire
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.county.test_bundles import build, send
from tests.edge.conftest import DCMTK_TIMEOUT_S
from tests.factories import make_instance, make_site, sha256
from tests.security.hostile import Case, cases, climbing_uid

SAFE_KEY = re.compile(r"^(dicom|quarantine|derived|staging|reports)/[0-9A-Za-z._-]+(/[0-9A-Za-z._-]+)*$")
"""A key under one of the store's prefixes, of UID-, digest- and name-safe characters."""
REFUSED_STATUSES = range(0xA000, 0xD000)  # Failure: out of resources, mismatch, cannot understand
CT = "1.2.840.10008.5.1.4.1.1.2"


def files_under(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _new_files_outside(before: dict[Path, str], after: dict[Path, str], inside: Path) -> list[Path]:
    return [p for p in after if p not in before and not p.is_relative_to(inside)]


def test_the_spool_writes_no_file_for_a_name_that_is_not_a_uid(tmp_path: Path) -> None:
    """The SCP names the spool file after the request's AffectedSOPInstanceUID before it has
    parsed the dataset: a "UID" that climbs out of the spool must not reach the file system."""
    with Spool(tmp_path / "spool") as spool:
        data = make_instance()
        digest = sha256(data)
        depth = len(spool.root.relative_to(tmp_path).parts) + 2  # objects/<shard>/
        (tmp_path / "escaped").mkdir()
        victim = tmp_path / "escaped" / f"victim.{digest}.dcm"
        victim.write_bytes(b"precious")
        with pytest.raises(ValueError):
            spool.begin_store(data, sop_uid=climbing_uid(depth, "escaped/victim"), sha256=digest)
        assert victim.read_bytes() == b"precious"


@pytest.fixture
def edge(tmp_path: Path, edge_settings: Settings):
    """An edge SCP without pre-made slots, so every instance gets a file named after it."""
    settings = edge_settings.model_copy(update={"edge_spool_slots": 0})
    with Spool(settings.edge_spool_dir) as spool:
        server = start_scp(settings, spool)
        try:
            yield spool, server.server_address[1]
        finally:
            stop_scp(server, grace_s=1.0)


def _send_pynetdicom(port: int, data: bytes) -> int | None:
    """C-STORE ``data`` on its own association; the status, or None if pynetdicom refused to send."""
    ds = dcmread(io.BytesIO(data))
    ae = AE(ae_title="TOWNSHIP_CT")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    try:
        with config.disable_value_validation():
            status = assoc.send_c_store(ds)
    except (ValueError, TypeError):  # pynetdicom will not put an over-long or multi-valued UID in a command set
        return None
    finally:
        assoc.release()
    return int(status.Status) if "Status" in status else ABORTED


ABORTED = -1
"""No C-STORE response: the association ended (aborted) without one."""


def _check_edge(tmp_path: Path, spool: Spool, before: dict[Path, str], good: Path, good_digest: str,
                statuses: dict[str, int | None], hostile: list[Case], *, cleaned: frozenset[str] = frozenset()) -> None:
    after = files_under(tmp_path)
    assert _new_files_outside(before, after, spool.root) == []
    assert after[good] == good_digest  # the instance accepted before is unchanged
    for case in hostile:
        status = statuses[case.name]
        if case.name in cleaned:  # the sender itself made the value a valid UID
            assert status == 0 or status in REFUSED_STATUSES, (case.name, status)
        elif case.name.startswith("uid-"):
            assert status is None or status in REFUSED_STATUSES, (case.name, status)
        else:  # names, preambles, meta: DIMSE carries only the dataset; the edge writes its own meta
            assert status == 0, (case.name, status)
    for path in after:
        if path.is_relative_to(spool.root / "objects"):
            assert re.fullmatch(r"[0-9.]+\.[0-9a-f]{64}\.dcm", path.name), path
            head = path.read_bytes()[:132]
            assert head == b"\x00" * 128 + b"DICM", path  # no preamble but the edge's own


def _good_instance(port: int, spool: Spool) -> tuple[Path, str]:
    data = make_instance()
    assert _send_pynetdicom(port, data) == 0
    (good,) = [p for p in (spool.root / "objects").rglob("*.dcm")]
    return good, hashlib.sha256(good.read_bytes()).hexdigest()


def test_hostile_instances_over_c_store_from_pynetdicom_write_nothing_outside_the_spool(tmp_path: Path, edge) -> None:
    spool, port = edge
    good, good_digest = _good_instance(port, spool)
    before = files_under(tmp_path)
    hostile = [*cases(), Case("uid-climbing", lambda: make_instance(SOPInstanceUID=climbing_uid(6)), True)]
    statuses = {case.name: _send_pynetdicom(port, case.build()) for case in hostile}
    assert sum(s is not None for s in statuses.values()) >= len(hostile) - 2  # only over-long SOP UIDs unsent
    _check_edge(tmp_path, spool, before, good, good_digest, statuses, hostile)


def test_hostile_instances_over_c_store_from_dcmtk_storescu_write_nothing_outside_the_spool(tmp_path: Path,
                                                                                          edge) -> None:
    spool, port = edge
    good, good_digest = _good_instance(port, spool)
    hostile = [c for c in cases() if "nul" not in c.name]  # a NUL cannot be in storescu's file name list
    folder = tmp_path / "to-send"
    folder.mkdir()
    for i, case in enumerate(hostile):
        (folder / f"{i:03d}.dcm").write_bytes(case.build())
    before = files_under(tmp_path)
    statuses: dict[str, int | None] = {}
    for i, case in enumerate(hostile):
        done = subprocess.run(["storescu", "-v", "-aet", "TOWNSHIP_CT", "-aec", "RELAY_EDGE", "-nh",
                               "127.0.0.1", str(port), str(folder / f"{i:03d}.dcm")],
                              capture_output=True, text=True, timeout=DCMTK_TIMEOUT_S)
        found = re.search(r"Received Store Response \((\w+)", done.stdout + done.stderr)
        hexa = re.search(r"DIMSE Status\s*: 0x([0-9A-Fa-f]{4})", done.stdout + done.stderr)
        if found is None:  # storescu refused to send the file itself
            statuses[case.name] = None
        else:
            statuses[case.name] = 0 if found.group(1) == "Success" else int(hexa.group(1), 16) if hexa else 0xC000
    assert sum(s is not None for s in statuses.values()) > len(hostile) // 2, statuses
    # DCMTK removes white space from UI values (with a warning): "1.2.3\n4" goes out as "1.2.34".
    cleaned = frozenset(c.name for c in hostile if c.name.startswith("uid-newline-"))
    _check_edge(tmp_path, spool, before, good, good_digest, statuses, hostile, cleaned=cleaned)


@pytest.fixture
def own_county(settings: Settings, seaweed, county):
    """A County on a bucket of this test's own (the `county` fixture cleans the tables)."""
    bucket = f"hostile-{uuid.uuid4().hex[:10]}"
    mine = County(settings.model_copy(update={"store_url": seaweed.url_for(bucket)}))
    try:
        yield mine
    finally:
        mine.close()


def _keys(county: County) -> dict[str, int]:
    return {o.key: o.size for o in county.store.list("")}


def _county_outcome(answer) -> str:
    if answer.status_code == 200:
        return "stored"
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return "refused"


def _ingest(client: TestClient, token: str, data: bytes) -> str:
    return _county_outcome(client.post(wire.INGEST_PATH, content=data, headers={
        "Authorization": f"Bearer {token}", wire.HEADER_SHA256: sha256(data), "Content-Type": wire.DICOM_MEDIA_TYPE}))


def _stow(client: TestClient, token: str, data: bytes) -> str:
    body = b"".join(multipart.stream_parts([data], boundary="x1", part_type="application/dicom"))
    answer = client.post("/dicomweb/studies", content=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": multipart.content_type("x1", "application/dicom")})
    if answer.status_code == 200:  # STOW-RS: 200 with the instance referenced
        assert "00081199" in answer.json() and "00081198" not in answer.json(), answer.text
        return "stored"
    if answer.status_code == 409:  # STOW-RS's refusal: a FailedSOPSequence with the reason's status
        (failed,) = answer.json()["00081198"]["Value"]
        assert failed["00081197"]["Value"][0] in (0xA900, 0xC000), answer.text
        return "refused"
    return _county_outcome(answer)


def _bundle(client: TestClient, token: str, data: bytes) -> str:
    try:
        spec, body = build([data], encoding="identity")
    except Exception:  # noqa: BLE001 - the test's own builder cannot even read the UID: send it as announced
        spec, body = _raw_bundle(data)
    created = client.post(wire.BUNDLES_PATH, json=spec, headers={"Authorization": f"Bearer {token}"})
    if created.status_code != 200:
        return _county_outcome(created)
    send(client, token, spec, body)
    done = client.post(f"{wire.BUNDLES_PATH}/{spec['bundle_id']}/complete", headers={"Authorization": f"Bearer {token}"})
    if done.status_code != 200:
        return _county_outcome(done)
    (result,) = done.json()["results"]
    return "stored" if result["outcome"] in ("stored", "duplicate") else "refused"


def _raw_bundle(data: bytes) -> tuple[dict, bytes]:
    from relay.dicom.bundle import FrameHeader, encode_bundle

    uid = "1.2.3.4"
    frames = [(FrameHeader(uid, sha256(data), len(data), "routine", "CT01", "2026-11-23T01:00:00+00:00"), data)]
    out = io.BytesIO()
    encode_bundle(frames, encoding="identity", out=out)
    body = out.getvalue()
    return {"bundle_id": str(uuid.uuid4()), "size": len(body), "sha256": sha256(body), "encoding": "identity",
            "priority": "routine", "instances": [{"sop_uid": uid, "sha256": sha256(data), "size": len(data)}]}, body


@pytest.mark.parametrize("channel", ["ingest", "bundle", "stow"])
def test_hostile_instances_to_the_county_are_refused_or_kept_under_a_safe_key(own_county, tmp_path, channel):
    send_one = {"ingest": _ingest, "bundle": _bundle, "stow": _stow}[channel]
    _, token = make_site(own_county, f"township-{channel}")
    with TestClient(create_app(own_county)) as client:
        good = make_instance()
        assert send_one(client, token, good) == "stored"
        keys_before, files_before = _keys(own_county), files_under(tmp_path)
        hostile = [(case, case.build()) for case in cases()]
        outcomes = {case.name: send_one(client, token, data) for case, data in hostile}
        keys_after = _keys(own_county)
    wrong = [f"{case.name}: {outcomes[case.name]}" for case, _ in hostile
             if outcomes[case.name] != ("refused" if case.refused else "stored")]
    assert wrong == [], "\n".join(wrong)
    assert [k for k in keys_after if not SAFE_KEY.match(k)] == []
    assert all(keys_after.get(k) == size for k, size in keys_before.items())  # nothing overwritten or lost
    (good_key,) = [k for k in keys_before if k.startswith("dicom/") and k.endswith(f"/{sha256(good)}.dcm")]
    assert own_county.store.get(good_key) == good
    new_dicom = [k for k in keys_after.keys() - keys_before.keys() if k.startswith("dicom/")]
    held = {sha256(own_county.store.get(k)) for k in new_dicom}
    assert held == {sha256(data) for case, data in hostile if not case.refused}  # bytes unchanged, preamble too
    assert _new_files_outside(files_before, files_under(tmp_path), own_county.settings.data_dir) == []

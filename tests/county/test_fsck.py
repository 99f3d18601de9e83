"""A county API process killed between the object write and the index commit (issue 13, row 6).

The test holds a lock on ``instances`` so that a real ``relay county`` process, ingesting
over HTTP, stops after it has written the object and before its row commits; the process
is then killed with SIGKILL. ``relay county fsck`` must name the object left behind, set it
aside with ``--repair`` (its bytes kept), and the edge's retry must complete either way:
afterwards no orphan object and no row without its object. A row whose object was
removed behind the county's back is named as missing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from relay.config import Settings
from relay.county.context import County
from relay.county.storage import open_store
from relay.dicom import wire
from relay.dicom.keys import instance_key
from tests.factories import make_dataset, encode, make_site, sha256
from tests.processes import RelayProcess, base_env, wait_for
from tests.servers import SeaweedFS, free_ports

TRIALS = 2
"""Kills in the suite; `bench/county_kill.py --trials 100` runs the full row."""


@pytest.fixture
def own_bucket(settings: Settings, seaweed: SeaweedFS) -> Settings:
    """This test's settings with a bucket of its own, so the sweep sees only its objects."""
    return settings.model_copy(update={"store_url": seaweed.url_for(f"fsck-{uuid.uuid4().hex[:10]}")})


@pytest.fixture
def fsck_county(own_bucket: Settings, county: County) -> Iterator[County]:
    """A County on the test's own bucket (``county`` empties the tables afterwards)."""
    c = County(own_bucket)
    yield c
    c.close()


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return base_env(data_dir=str(settings.data_dir), database_url=settings.resolved_database_url,
                    broker_url=settings.resolved_broker_url, store_url=settings.resolved_store_url,
                    queue_prefix=settings.queue_prefix, **extra)


def _api(settings: Settings, tmp_path: Path, name: str) -> tuple[RelayProcess, str]:
    port, = free_ports(1)
    proc = RelayProcess(name, ["county", "--no-migrate"], cwd=tmp_path, logdir=tmp_path,
                        env=_env(settings, county_port=str(port)))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(f"{name} up", up, timeout=120, procs=[proc])
    return proc, base


def _post(base: str, token: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}{wire.INGEST_PATH}", content=data, timeout=60,
                      headers={"Authorization": f"Bearer {token}", wire.HEADER_SHA256: sha256(data),
                               "Content-Type": wire.DICOM_MEDIA_TYPE})


def _fsck(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", "county", "fsck", "--grace-minutes", "0", *args],
                          env=_env(settings), cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _killed_between_write_and_commit(settings: Settings, tmp_path: Path, token: str, data: bytes,
                                     key: str, trial: int) -> None:
    """Ingest ``data`` through a real API process and SIGKILL it after the object is written
    and before the row commits (the test's lock on ``instances`` holds the commit back)."""
    store = open_store(settings.resolved_store_url)
    proc, base = _api(settings, tmp_path, f"county-kill{trial}")
    dsn = settings.resolved_database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    answers: list[object] = []
    with psycopg.connect(dsn) as lock:
        lock.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")  # INSERTs wait
        sender = threading.Thread(target=lambda: answers.append(_try_post(base, token, data)), daemon=True)
        sender.start()
        wait_for("the object written while the row waits for the lock", lambda: store.exists(key),
                 timeout=60, procs=[proc])
        proc.stop(sig=signal.SIGKILL)
        lock.rollback()
    sender.join(timeout=60)
    assert answers and not isinstance(answers[0], httpx.Response), (
        f"the killed API answered the edge: {answers}: a 200 here would be a promise it did not keep")


def _try_post(base: str, token: str, data: bytes) -> object:
    try:
        return _post(base, token, data)
    except httpx.HTTPError as exc:
        return exc


def kill_trial(settings: Settings, tmp_path: Path, token: str, trial: int) -> dict[str, object]:
    """One trial of the row: kill between write and commit, fsck, (repair,) the retry, fsck.
    Every second trial the operator sweeps with ``--repair`` before the edge retries."""
    store = open_store(settings.resolved_store_url)
    ds = make_dataset(PatientName="FSCK^Canary")
    data = encode(ds)
    key = instance_key(study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
                       sop_uid=str(ds.SOPInstanceUID), sha256=sha256(data))
    _killed_between_write_and_commit(settings, tmp_path, token, data, key, trial)
    found = _fsck(settings, tmp_path)
    assert found.returncode == 1 and f"orphan object: {key}" in found.stdout, found.stdout + found.stderr
    repair_first = trial % 2 == 1
    proc, base = _api(settings, tmp_path, f"county-after{trial}")
    try:
        if repair_first:  # the operator sweeps before the edge comes back
            repaired = _fsck(settings, tmp_path, "--repair")
            assert repaired.returncode == 0, repaired.stdout + repaired.stderr
            assert not store.exists(key) and store.get(f"lost+found/{key}") == data
        answer = _post(base, token, data)  # the edge retries: it never got a 200
        assert answer.status_code == 200 and answer.json()["outcome"] == "stored", answer.text
    finally:
        proc.stop()
    assert store.get(key) == data
    clean = _fsck(settings, tmp_path)
    assert clean.returncode == 0 and "orphan" not in clean.stdout, clean.stdout + clean.stderr
    assert "FSCK^Canary" not in clean.stdout + clean.stderr + found.stdout + found.stderr
    return {"trial": trial, "repair_first": repair_first, "orphan_found": True, "retry": "stored", "clean": True}


def test_an_api_killed_between_object_and_commit_leaves_an_orphan_that_fsck_sets_aside_and_the_retry_completes(
        own_bucket: Settings, fsck_county: County, tmp_path: Path) -> None:
    _, token = make_site(fsck_county)
    for trial in range(TRIALS):
        kill_trial(own_bucket, tmp_path, token, trial)


def test_a_row_whose_object_is_gone_is_named_missing(own_bucket: Settings, fsck_county: County,
                                                     tmp_path: Path) -> None:
    _, token = make_site(fsck_county)
    proc, base = _api(own_bucket, tmp_path, "county-missing")
    try:
        ds = make_dataset()
        data = encode(ds)
        assert _post(base, token, data).status_code == 200
    finally:
        proc.stop()
    key = instance_key(study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
                       sop_uid=str(ds.SOPInstanceUID), sha256=sha256(data))
    assert _fsck(own_bucket, tmp_path).returncode == 0
    open_store(own_bucket.resolved_store_url).delete_unsafe(key)  # behind the county's back
    gone = _fsck(own_bucket, tmp_path, "--repair")
    assert gone.returncode == 1 and f"MISSING OBJECT: sop {ds.SOPInstanceUID} from township-a" in gone.stderr, (
        gone.stdout + gone.stderr)

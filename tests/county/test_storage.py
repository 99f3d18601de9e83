"""The object stores: never overwrite, durable puts, same behaviour on a folder and on S3.

The S3 tests run against a real SeaweedFS S3 gateway (one per test session); if it
cannot start, these tests fail (they never skip).
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from relay.county import storage
from relay.county.storage import (
    LocalFolderStore,
    ObjectConflict,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3Store,
    StoreUnavailable,
    open_store,
    redact_store_url,
)
from relay.dicom.keys import instance_key
from tests.servers import SeaweedFS, free_port


# ``seaweed`` is the session's SeaweedFS from tests/conftest.py (tests/servers.py):
# started once per run, and a failure to start fails these tests.


@pytest.fixture(scope="module")
def s3_store(seaweed: SeaweedFS) -> S3Store:
    store = open_store(seaweed.s3_url)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "folder":
        return LocalFolderStore(tmp_path / "objects")
    s3: S3Store = request.getfixturevalue("s3_store")
    return s3


def _object(size: int = 64 * 1024) -> tuple[str, bytes, str]:
    """A fresh key, random bytes and their SHA-256, keyed as the ingest keys them."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    uid = f"2.25.{uuid.uuid4().int}"
    key = instance_key(study_uid=f"{uid}.1", series_uid=f"{uid}.2", sop_uid=f"{uid}.3", sha256=sha)
    return key, data, sha


def _other_bytes_same_size(data: bytes) -> tuple[bytes, str]:
    other = bytes([data[0] ^ 0xFF]) + data[1:]
    return other, hashlib.sha256(other).hexdigest()


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --- both stores --------------------------------------------------------------------------


def test_put_then_get_returns_identical_bytes(store: ObjectStore) -> None:
    key, data, sha = _object()
    store.put(key, data, sha256=sha)
    assert store.get(key) == data
    assert store.exists(key)
    assert store.size(key) == len(data)


def test_put_of_same_bytes_twice_is_a_noop(store: ObjectStore) -> None:
    key, data, sha = _object()
    store.put(key, data, sha256=sha)
    store.put(key, data, sha256=sha)
    assert store.get(key) == data


def test_put_of_other_bytes_raises_conflict_and_keeps_original(store: ObjectStore) -> None:
    key, data, sha = _object()
    store.put(key, data, sha256=sha)
    other, other_sha = _other_bytes_same_size(data)
    with pytest.raises(ObjectConflict) as caught:
        store.put(key, other, sha256=other_sha)
    assert (caught.value.key, caught.value.held_sha256) == (key, sha)
    assert store.get(key) == data


def test_missing_key_does_not_exist(store: ObjectStore) -> None:
    key, _, _ = _object()
    assert not store.exists(key)
    assert store.size(key) is None
    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_put_with_wrong_digest_is_refused(store: ObjectStore) -> None:
    key, data, _ = _object()
    with pytest.raises(ValueError):
        store.put(key, data, sha256=hashlib.sha256(b"other").hexdigest())
    assert not store.exists(key)


@pytest.mark.parametrize("key", ["../escape.dcm", "a/../../escape.dcm", "/abs/key.dcm",
                                 "a//b.dcm", "a/./b.dcm", "", "a\\b.dcm", ".hidden"])
def test_unsafe_keys_are_rejected(store: ObjectStore, key: str) -> None:
    data = b"x"
    with pytest.raises(ValueError):
        store.put(key, data, sha256=hashlib.sha256(data).hexdigest())


def test_check_passes_on_a_working_store(store: ObjectStore) -> None:
    store.check()


# --- local folder ---------------------------------------------------------------------------


def test_folder_put_leaves_no_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalFolderStore(root)
    key, data, sha = _object()
    store.put(key, data, sha256=sha)
    store.put(key, data, sha256=sha)
    other, other_sha = _other_bytes_same_size(data)
    with pytest.raises(ObjectConflict):
        store.put(key, other, sha256=other_sha)
    assert _files_under(root) == [root / key]


def test_folder_rejects_dotdot_without_writing_outside_root(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    data = b"escape"
    with pytest.raises(ValueError):
        store.put("../escape.dcm", data, sha256=hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "escape.dcm").exists()
    assert _files_under(tmp_path) == []


def test_folder_noop_put_keeps_the_same_file(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    key, data, sha = _object()
    store.put(key, data, sha256=sha)
    inode = (tmp_path / "objects" / key).stat().st_ino
    store.put(key, data, sha256=sha)
    assert (tmp_path / "objects" / key).stat().st_ino == inode


def test_folder_racing_puts_of_same_bytes_all_succeed(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalFolderStore(root)
    key, data, sha = _object()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: store.put(key, data, sha256=sha), range(16)))
    assert _files_under(root) == [root / key]
    assert store.get(key) == data


def test_folder_check_fails_when_root_is_gone(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "objects")
    (tmp_path / "objects").rmdir()
    with pytest.raises(StoreUnavailable):
        store.check()


# --- S3 --------------------------------------------------------------------------------


def test_s3_noop_put_does_not_upload_again(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    key, data, sha = _object()
    s3_store.put(key, data, sha256=sha)
    uploads: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        uploads.append(args[1])
        return real_put(*args, **kwargs)

    real_put = s3_store.client.put_object
    monkeypatch.setattr(s3_store.client, "put_object", spy)
    s3_store.put(key, data, sha256=sha)
    assert uploads == []


def test_s3_object_carries_its_sha256_as_metadata(seaweed: SeaweedFS, s3_store: S3Store) -> None:
    key, data, sha = _object()
    s3_store.put(key, data, sha256=sha)
    stat = seaweed.client().stat_object(s3_store.bucket, key)
    assert stat.metadata is not None and stat.metadata.get("x-amz-meta-sha256") == sha


def test_s3_multipart_object_round_trips_and_dedupes(s3_store: S3Store) -> None:
    key, data, sha = _object(6 * 1024 * 1024)  # above the minio client's 5 MiB part size
    s3_store.put(key, data, sha256=sha)
    s3_store.put(key, data, sha256=sha)
    assert s3_store.get(key) == data


def test_s3_object_without_digest_metadata_is_compared_by_bytes(
    seaweed: SeaweedFS, s3_store: S3Store
) -> None:
    key, data, sha = _object()
    seaweed.client().put_object(s3_store.bucket, key, io.BytesIO(data), len(data))
    s3_store.put(key, data, sha256=sha)  # same bytes: accepted
    other, other_sha = _other_bytes_same_size(data)
    with pytest.raises(ObjectConflict):
        s3_store.put(key, other, sha256=other_sha)
    assert s3_store.get(key) == data


def test_s3_bucket_is_created_when_missing(seaweed: SeaweedFS) -> None:
    bucket = f"relay-new-{uuid.uuid4().hex[:8]}"
    open_store(seaweed.url_for(bucket)).check()
    assert seaweed.client().bucket_exists(bucket)


def test_s3_wrong_secret_is_refused_without_revealing_it(seaweed: SeaweedFS) -> None:
    secret = "not-the-secret-1234"
    url = f"s3://{seaweed.access_key}:{secret}@{seaweed.endpoint}/{seaweed.bucket}"
    with pytest.raises(ObjectStoreError) as caught:
        open_store(url)
    assert secret not in str(caught.value)


def test_s3_unreachable_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "S3_RETRIES", 0)
    with pytest.raises(StoreUnavailable):
        open_store(f"s3://key:secret@127.0.0.1:{free_port()}/relay-nowhere")


def test_s3_check_fails_when_bucket_is_gone(seaweed: SeaweedFS) -> None:
    bucket = f"relay-gone-{uuid.uuid4().hex[:8]}"
    store = open_store(seaweed.url_for(bucket))
    seaweed.client().remove_bucket(bucket)
    with pytest.raises(StoreUnavailable):
        store.check()


# --- URLs -------------------------------------------------------------------------------


def test_file_url_opens_a_folder_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'objects'}")
    assert isinstance(store, LocalFolderStore)
    assert store.root == (tmp_path / "objects").resolve()


@pytest.mark.parametrize("url", ["file://relative/path", "ftp://host/x", "s3://host:9000/bucket",
                                 "s3://a:b@host:9000/", "s3://a:b@host:9000/bucket?tls=1"])
def test_bad_store_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_redacted_url_hides_only_the_secret() -> None:
    url = "s3://ACCESS:SE%2FCRET@minio:9000/relay?secure=1"
    assert redact_store_url(url) == "s3://ACCESS:***@minio:9000/relay?secure=1"
    assert redact_store_url("file:///var/relay/objects") == "file:///var/relay/objects"

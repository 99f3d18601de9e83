"""The county's object store: where every received DICOM object is kept.

One interface, two implementations:

* ``S3Store`` talks to MinIO (production) or any S3 server through the ``minio``
  client. A put returns when the server has acknowledged the object; that
  acknowledgement is only as durable as the server's settings: MinIO needs
  ``MINIO_DRIVE_SYNC=on`` in production, without it MinIO fsyncs only metadata
  and an acknowledged object can be lost on power failure (docs/ARCHITECTURE.md,
  "Durability settings production depends on").
* ``LocalFolderStore`` is the embedded default of ``relay up`` on one machine: a
  folder, written with temp file + fsync + link + directory fsync.

Both keep the rule of the architecture: an object is never replaced with different
bytes. Keys come from ``relay.dicom.keys`` and contain the SHA-256 of the bytes, so a
conflict should be impossible; the stores check anyway and raise ``ObjectConflict``
rather than overwrite (dcm4chee #4754/#4969 lost both copies replacing in place).

Credentials in store URLs are never logged: use ``redact_store_url`` to show one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from relay.dicom.verified import VerifiedInstance

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

S3_CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a TCP connection to the S3 server. Default 10 s: the server is
on the county LAN, so a longer wait means it is down, and /healthz should say so."""

S3_READ_TIMEOUT_S = 120.0
"""Seconds of silence on an S3 connection before a request fails (per socket read,
not per request). Default 120 s: long enough for a busy MinIO fsyncing a large
multipart object, short enough that a hung server does not pin a worker for the
minio client's default of 5 minutes."""

S3_RETRIES = 5
"""Retries of a failed S3 request (connection errors and HTTP 500/502/503/504), with
0.2 s exponential backoff; the minio client's own default, kept explicit."""

S3_POOL_SIZE = 10
"""HTTP connections kept open per S3 server and process (minio client default)."""


class ObjectStoreError(Exception):
    """A failure of the object store; the message never contains credentials."""


class ObjectConflict(ObjectStoreError):
    """The key already holds different bytes; nothing was written."""

    def __init__(self, key: str, *, held_sha256: str | None, new_sha256: str) -> None:
        super().__init__(
            f"object {key} already holds other bytes "
            f"(held sha256={held_sha256 or 'unknown'}, new sha256={new_sha256})"
        )
        self.key = key
        self.held_sha256 = held_sha256
        self.new_sha256 = new_sha256


class ObjectNotFound(ObjectStoreError, LookupError):
    """No object under this key."""


class StoreUnavailable(ObjectStoreError):
    """The store cannot be reached or used (raised by ``check``)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as a listing sees it."""

    key: str
    size: int
    modified_at: datetime
    """When it was written (UTC)."""


class ObjectStore(Protocol):
    """Where the county keeps objects, by key. Implementations are thread-safe."""

    def put(self, key: str, data: bytes, *, sha256: str) -> None:
        """Store ``data`` under ``key``; durable when it returns.

        ``sha256`` is the lowercase hex SHA-256 of ``data`` (checked). If ``key``
        already holds the same bytes this is a no-op; if it holds other bytes,
        ``ObjectConflict`` is raised and the held bytes are left as they were.
        """
        ...

    def put_verified(self, key: str, instance: VerifiedInstance) -> None:
        """``put`` of an instance verified at the county's door: its SHA-256 is taken
        as carried, not computed again."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``ObjectNotFound`` if there are none."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def size(self, key: str) -> int | None:
        """Size in bytes of the object under ``key``, None if there is none."""
        ...

    def check(self) -> None:
        """Raise ``StoreUnavailable`` unless the store is reachable and usable (/healthz)."""
        ...

    def delete_unsafe(self, key: str) -> None:
        """Remove ``key`` if present. Only for staging data (upload chunks): a received
        instance is never deleted through this, hence the name."""
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix`` (for ``relay county fsck``)."""
        ...

    def set_aside(self, key: str, dest: str) -> None:
        """Move the object under ``key`` to ``dest`` (a copy first, then the original goes),
        keeping its bytes: how fsck clears an orphan without destroying anything."""
        ...


# --- keys and digests ------------------------------------------------------------------


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ValueError.

    Both stores accept the same keys, so that a key that works on the embedded
    folder also works on S3 and the reverse: '/'-separated, relative, no empty,
    '.' or '..' segments, no segment starting with '.' (temp files of the folder
    store), no backslash or control characters.
    """
    if not key or key.startswith("/") or len(key) > 1024:
        raise ValueError(f"not a relative object key: {key!r}")
    if "\\" in key or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ValueError(f"object key has a backslash or control character: {key!r}")
    for part in key.split("/"):
        if not part or part.startswith("."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def _check_digest(data: bytes, sha256: str) -> None:
    """Raise ValueError unless ``sha256`` is the digest of ``data``.

    The digest becomes part of the key and the stored metadata; a wrong one would
    make a later conflict check compare against a lie.
    """
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"data does not match its SHA-256 {sha256}")


# --- local folder ---------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (new names, links)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (read in 1 MiB chunks)."""
    view = memoryview(data)
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            if view[offset : offset + len(chunk)] != chunk:
                return False
            offset += len(chunk)
    return offset == len(data)


def _file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path`` (for the message of a conflict)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class LocalFolderStore:
    """Objects as files under ``root``, key ``a/b/c`` at ``root/a/b/c``.

    The embedded default for one machine (``relay up``). A put writes a temp file
    in the target directory, fsyncs it, hard-links it to the final name (``link``
    fails instead of replacing an existing name, so an object is never overwritten,
    even by two processes racing), removes the temp name and fsyncs the directories
    from the object up to ``root``. A crash mid-put can leave a ``.tmp-*`` file
    beside the object; no key starts with '.', so it never shadows one, and it is
    safe to delete when no put is running.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalFolderStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*PurePosixPath(check_key(key)).parts)

    def put(self, key: str, data: bytes, *, sha256: str) -> None:
        _check_digest(data, sha256)
        self._put(key, data, sha256)

    def put_verified(self, key: str, instance: VerifiedInstance) -> None:
        self._put(key, instance.data, instance.sha256)

    def _put(self, key: str, data: bytes, sha256: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            self._write_synced(tmp, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _same_content(path, data):
                    held = _file_sha256(path)
                    raise ObjectConflict(key, held_sha256=held, new_sha256=sha256) from None
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_parents(path)

    @staticmethod
    def _write_synced(tmp: Path, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_parents(self, path: Path) -> None:
        """Fsync every directory from the object's up to ``root``.

        Each one may have been created just now, by us or by a concurrent put that
        has not synced it yet; fsync of an unchanged directory is cheap.
        """
        folder = path.parent
        while True:
            _fsync_dir(folder)
            if folder == self.root:
                return
            folder = folder.parent

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete_unsafe(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        top = self.root.joinpath(*PurePosixPath(prefix.rsplit("/", 1)[0]).parts) if "/" in prefix else self.root
        if not top.is_dir():
            return
        for folder, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith("."):  # a put's temp file
                    continue
                path = Path(folder) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    yield StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def set_aside(self, key: str, dest: str) -> None:
        src, target = self._path(key), self._path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except FileExistsError:
            if not _same_content(target, src.read_bytes()):
                raise ObjectConflict(dest, held_sha256=_file_sha256(target), new_sha256=_file_sha256(src)) from None
        self._sync_parents(target)
        src.unlink()
        _fsync_dir(src.parent)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(f"object folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"object folder {self.root} is not writable")


# --- S3 / MinIO ----------------------------------------------------------------------------

_META_SHA256 = "x-amz-meta-sha256"
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class S3Store:
    """Objects in one bucket of an S3 server (MinIO in production), via ``minio``.

    The bucket is created at construction if missing. Each object carries its
    SHA-256 as user metadata (``x-amz-meta-sha256``), so that a put on an existing
    key compares digests without downloading. The transfer itself is checked by
    the server: the minio client signs the payload's SHA-256 over HTTP and sends
    Content-MD5 over HTTPS.

    A put is stat-then-put, not a conditional write (the minio client does not
    expose ``If-None-Match``): two replicas racing on one missing key both write.
    With SHA-keyed keys (``relay.dicom.keys``) they write the same bytes, so the
    race is harmless; keys without the digest would be last-writer-wins.
    """

    def __init__(self, client: Minio, bucket: str, *, endpoint: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.endpoint = endpoint
        self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    @contextmanager
    def _reaching(self, action: str) -> Iterator[None]:
        """Turn transport failures (refused, timeout, retries exhausted) into
        ``StoreUnavailable``, so callers can answer 503 and let the edge retry."""
        try:
            yield
        except _TRANSPORT_ERRORS as exc:
            raise StoreUnavailable(
                f"S3 server {self.endpoint} unreachable ({action}): {type(exc).__name__}"
            ) from exc

    def _ensure_bucket(self) -> None:
        try:
            with self._reaching("create bucket"):
                exists = self.client.bucket_exists(self.bucket)
            if not exists:
                with self._reaching("create bucket"):
                    self.client.make_bucket(self.bucket)
                log.info("created bucket %s on %s", self.bucket, self.endpoint)
        except S3Error as exc:
            # Another replica created it between our check and our create.
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ObjectStoreError(f"cannot create bucket {self.bucket}: {exc.code}") from exc

    def put(self, key: str, data: bytes, *, sha256: str) -> None:
        _check_digest(data, sha256)
        self._put(key, data, sha256)

    def put_verified(self, key: str, instance: VerifiedInstance) -> None:
        self._put(key, instance.data, instance.sha256)

    def _put(self, key: str, data: bytes, sha256: str) -> None:
        check_key(key)
        held = self._stat(key)
        if held is not None:
            self._check_same(key, data, sha256, held)
            return
        with self._reaching("put"):
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data),
                content_type="application/octet-stream", metadata={"sha256": sha256},
            )

    def _check_same(self, key: str, data: bytes, sha256: str, held: tuple[int, str | None]) -> None:
        """No-op if the held object has these bytes, else ``ObjectConflict``."""
        held_size, held_sha = held
        if held_sha is None:  # written by another tool: compare the bytes themselves
            if held_size == len(data) and self.get(key) == data:
                return
        elif held_sha == sha256 and held_size == len(data):
            return
        raise ObjectConflict(key, held_sha256=held_sha, new_sha256=sha256)

    def _stat(self, key: str) -> tuple[int, str | None] | None:
        """(size, sha256 metadata or None) of the object under ``key``, None if missing."""
        try:
            with self._reaching("stat"):
                st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise
        meta = st.metadata or {}
        sha = meta.get(_META_SHA256)
        return int(st.size or 0), (sha.lower() if sha else None)

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            with self._reaching("get"):
                response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(key) from None
            raise
        try:
            with self._reaching("get"):
                return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        return self._stat(check_key(key)) is not None

    def size(self, key: str) -> int | None:
        held = self._stat(check_key(key))
        return None if held is None else held[0]

    def delete_unsafe(self, key: str) -> None:
        with self._reaching("delete"):
            self.client.remove_object(self.bucket, check_key(key))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        with self._reaching("list"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is None or obj.is_dir:
                    continue
                modified = obj.last_modified or datetime.now(timezone.utc)
                yield StoredObject(obj.object_name, int(obj.size or 0), modified)

    def set_aside(self, key: str, dest: str) -> None:
        check_key(key)
        check_key(dest)
        with self._reaching("copy"):
            self.client.copy_object(self.bucket, dest, CopySource(self.bucket, key))
        with self._reaching("delete"):
            self.client.remove_object(self.bucket, key)

    def check(self) -> None:
        try:
            with self._reaching("check"):
                found = self.client.bucket_exists(self.bucket)
        except MinioException as exc:
            raise StoreUnavailable(
                f"S3 server {self.endpoint} failed the check: {type(exc).__name__}"
            ) from exc
        if not found:
            raise StoreUnavailable(f"bucket {self.bucket} missing on {self.endpoint}")


# --- URLs -------------------------------------------------------------------------------


def redact_store_url(url: str) -> str:
    """``url`` with its secret key replaced by ``***``, safe to log or show."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def _http_client(*, secure: bool) -> urllib3.PoolManager:
    """The minio client's own pool, with the timeouts of this module instead of 5 min."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT_S, read=S3_READ_TIMEOUT_S),
        maxsize=S3_POOL_SIZE,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=certifi.where(),
        retries=urllib3.Retry(
            total=S3_RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


def _open_s3(url: str) -> S3Store:
    """``S3Store`` from ``s3://ACCESS:SECRET@HOST[:PORT]/BUCKET[?secure=0|1&region=R]``.

    Access and secret keys are percent-decoded, so a secret containing '/' or '+'
    is written %2F / %2B. ``secure`` defaults to 0 (plain HTTP on the county LAN).
    """
    parts = urlsplit(url)
    shown = redact_store_url(url)
    bucket = parts.path.strip("/")
    if not parts.hostname or not bucket or "/" in bucket:
        raise ValueError(f"S3 store URL needs a host and one bucket: {shown}")
    if parts.username is None or parts.password is None:
        raise ValueError(f"S3 store URL needs ACCESS:SECRET credentials: {shown}")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"secure", "region"}
    if unknown:
        raise ValueError(f"unknown S3 store URL parameter(s) {sorted(unknown)}: {shown}")
    secure = query.get("secure", "0").lower() in ("1", "true", "yes", "on")
    endpoint = parts.hostname + (f":{parts.port}" if parts.port else "")
    client = Minio(
        endpoint, access_key=unquote(parts.username), secret_key=unquote(parts.password),
        secure=secure, region=query.get("region") or None, http_client=_http_client(secure=secure),
    )
    return S3Store(client, bucket, endpoint=endpoint)


def _open_folder(url: str) -> LocalFolderStore:
    """``LocalFolderStore`` from ``file:///absolute/path``."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError(f"folder store URL must be file:///absolute/path: {url}")
    return LocalFolderStore(Path(unquote(parts.path)))


def open_store(url: str) -> ObjectStore:
    """The object store named by ``url`` (``Settings.resolved_store_url``).

    ``file:///abs/path`` gives a ``LocalFolderStore``; ``s3://ACCESS:SECRET@HOST:PORT/
    BUCKET?secure=0|1&region=R`` an ``S3Store`` (bucket created if missing).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return _open_folder(url)
    if scheme == "s3":
        return _open_s3(url)
    raise ValueError(f"unsupported object store URL scheme {scheme!r}: {redact_store_url(url)}")


def s3_url(*, access_key: str, secret_key: str, endpoint: str, bucket: str,
           secure: bool = False) -> str:
    """Build an ``s3://`` store URL, percent-encoding the credentials."""
    creds = f"{quote(access_key, safe='')}:{quote(secret_key, safe='')}"
    return f"s3://{creds}@{endpoint}/{bucket}?secure={int(secure)}"

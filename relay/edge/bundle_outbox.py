"""The edge's outbox: encoded bundles waiting to be uploaded, and what each one holds.

A bundle is built once from spooled instances, written durably to
``<spool>/outbox/<bundle_id>.bundle`` (``.part``, fsync, rename, folder fsync) and only
then recorded in ``<spool>/outbox.sqlite3``, so that after a restart the same bundle
(same id, same bytes) resumes where the county is. The outbox only says "this pending
instance is packed in bundle X"; whether an instance is at the county is the spool
journal's alone, marked before the bundle is dropped here. So a crash at any point, or
losing this file, costs bandwidth, never an instance: docs/design/edge-bundles.md.

Thread-safe: one connection under a lock; bundle files are written outside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.dicom.bundle import FrameHeader, encode_bundle
from relay.dicom.vocab import Priority
from relay.edge.clock import iso, now_utc
from relay.edge.durable import fsync_dir
from relay.edge.slots import read_exactly
from relay.edge.journal import SpoolEntry

log = logging.getLogger(__name__)

OUTBOX_DB_NAME = "outbox.sqlite3"
OUTBOX_DIR = "outbox"
READ_BLOCK_BYTES = 1024 * 1024
"""Bytes read per block when hashing a spool file (1 MiB)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id      TEXT PRIMARY KEY,   -- uuid4, chosen here, sent to the county
    priority       TEXT NOT NULL,      -- one priority per bundle
    priority_rank  INTEGER NOT NULL,
    encoding       TEXT NOT NULL,      -- 'zstd' | 'identity'
    size           INTEGER NOT NULL,   -- encoded bytes, as uploaded
    sha256         TEXT NOT NULL,      -- of the encoded bytes
    raw_bytes      INTEGER NOT NULL,   -- sum of the instances' sizes
    created_at     TEXT NOT NULL,      -- UTC ISO 8601
    uploaded       INTEGER NOT NULL DEFAULT 0  -- offset the county last confirmed (progress only)
);
CREATE TABLE IF NOT EXISTS bundle_instances (
    entry_id   INTEGER PRIMARY KEY,    -- spool journal row id: in one bundle at most
    bundle_id  TEXT NOT NULL REFERENCES bundles (bundle_id),
    seq        INTEGER NOT NULL,       -- order inside the bundle
    sop_uid    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bundle_instances_bundle ON bundle_instances (bundle_id, seq);
"""


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One instance packed in a bundle."""

    entry_id: int
    sop_uid: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """An encoded bundle on disk, ready to upload (or resume)."""

    bundle_id: str
    priority: Priority
    encoding: str
    size: int
    sha256: str
    raw_bytes: int
    path: Path
    items: tuple[BundleItem, ...]

    def announcement(self) -> dict[str, Any]:
        """The JSON body of the create request (wire step 1)."""
        return {
            "bundle_id": self.bundle_id, "size": self.size, "sha256": self.sha256,
            "encoding": self.encoding, "priority": self.priority.value,
            "instances": [{"sop_uid": i.sop_uid, "sha256": i.sha256, "size": i.size}
                          for i in self.items],
        }


@dataclass(frozen=True, slots=True)
class Unusable:
    """A spool entry that could not be packed (file missing or not the journaled bytes)."""

    entry: SpoolEntry
    reason: str


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return int(self.fh.write(data))

    def flush(self) -> None:
        self.fh.flush()


def read_verified(entry: SpoolEntry) -> bytes:
    """The spooled bytes of ``entry``; ValueError if they are not the journaled SHA-256."""
    data = read_exactly(entry.path, entry.size)
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ValueError("spool file differs from its journaled SHA-256")
    return data


class BundleOutbox:
    """Bundles built from the spool at ``root`` and not yet completed at the county."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.folder = self.root / OUTBOX_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.root / OUTBOX_DB_NAME, check_same_thread=False,
                                     timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a committed bundle survives power loss
        with self._conn:
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(bundles)")}
            if "uploaded" not in columns:  # an outbox from before progress was kept
                self._conn.execute(
                    "ALTER TABLE bundles ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 0")
        self._recover()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- recovery -------------------------------------------------------------------
    def _recover(self) -> None:
        known = {row[0] for row in self._conn.execute("SELECT bundle_id FROM bundles")}
        for file in self.folder.iterdir():
            if file.suffix == ".part" or file.stem not in known:
                log.warning("outbox: removing unrecorded file %s", file.name)
                file.unlink()
        for bundle_id in known:
            if not self._path(bundle_id).is_file():
                log.error("outbox: bundle=%s file missing; its instances are packed again",
                          bundle_id)
                self.drop(bundle_id)

    def _path(self, bundle_id: str) -> Path:
        return self.folder / f"{bundle_id}.bundle"

    # --- build ----------------------------------------------------------------------
    def build(self, entries: Iterable[SpoolEntry], *, priority: Priority,
              encoding: str) -> tuple[Bundle | None, list[Unusable]]:
        """Pack ``entries`` into a new durable bundle; entries whose file is missing or
        altered are left out and returned. None when nothing could be packed."""
        bundle_id = str(uuid.uuid4())
        part = self.folder / f"{bundle_id}.part"
        items: list[BundleItem] = []
        unusable: list[Unusable] = []
        try:
            with part.open("wb") as fh:
                writer = _HashingWriter(fh)
                encode_bundle(self._frames(entries, items, unusable), encoding=encoding,
                              out=writer)  # type: ignore[arg-type]
                fh.flush()
                os.fsync(fh.fileno())
            if not items:
                part.unlink()
                return None, unusable
            os.replace(part, self._path(bundle_id))
            fsync_dir(self.folder)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        bundle = Bundle(bundle_id=bundle_id, priority=priority, encoding=encoding,
                        size=writer.size, sha256=writer.digest.hexdigest(),
                        raw_bytes=sum(i.size for i in items), path=self._path(bundle_id),
                        items=tuple(items))
        self._record(bundle)
        return bundle, unusable

    def _frames(self, entries: Iterable[SpoolEntry], items: list[BundleItem],
                unusable: list[Unusable]) -> Iterator[tuple[FrameHeader, bytes]]:
        for entry in entries:
            try:
                data = read_verified(entry)
            except (OSError, ValueError) as exc:
                unusable.append(Unusable(entry, str(getattr(exc, "strerror", None) or exc)))
                continue
            items.append(BundleItem(entry.entry_id, entry.sop_uid, entry.sha256, entry.size))
            yield FrameHeader(sop_uid=entry.sop_uid, sha256=entry.sha256, size=entry.size,
                              priority=entry.priority.value, calling_ae=entry.calling_ae,
                              received_at=entry.received_at, late=entry.late), data

    def _record(self, bundle: Bundle) -> None:
        try:
            with self._lock, self._conn:
                self._conn.execute(
                    "INSERT INTO bundles (bundle_id, priority, priority_rank, encoding, size,"
                    " sha256, raw_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (bundle.bundle_id, bundle.priority.value, bundle.priority.rank,
                     bundle.encoding, bundle.size, bundle.sha256, bundle.raw_bytes,
                     iso(now_utc())))
                self._conn.executemany(
                    "INSERT INTO bundle_instances (entry_id, bundle_id, seq, sop_uid, sha256,"
                    " size) VALUES (?, ?, ?, ?, ?, ?)",
                    [(i.entry_id, bundle.bundle_id, n, i.sop_uid, i.sha256, i.size)
                     for n, i in enumerate(bundle.items)])
        except BaseException:
            bundle.path.unlink(missing_ok=True)
            raise

    # --- queries ----------------------------------------------------------------------
    def reserved_ids(self) -> set[int]:
        """Spool entry ids already packed in a bundle of this outbox."""
        with self._lock:
            return {int(r[0]) for r in self._conn.execute("SELECT entry_id FROM bundle_instances")}

    def bundles(self) -> list[Bundle]:
        """Every bundle not yet completed, most urgent first, then oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM bundles ORDER BY priority_rank, created_at").fetchall()
            return [self._bundle(row) for row in rows]

    def _bundle(self, row: sqlite3.Row) -> Bundle:
        items = tuple(BundleItem(int(r["entry_id"]), r["sop_uid"], r["sha256"], int(r["size"]))
                      for r in self._conn.execute(
                          "SELECT * FROM bundle_instances WHERE bundle_id = ? ORDER BY seq",
                          (row["bundle_id"],)))
        return Bundle(bundle_id=row["bundle_id"], priority=Priority(row["priority"]),
                      encoding=row["encoding"], size=int(row["size"]), sha256=row["sha256"],
                      raw_bytes=int(row["raw_bytes"]), path=self._path(row["bundle_id"]),
                      items=items)

    def note_progress(self, bundle_id: str, offset: int) -> None:
        """Remember the offset the county confirmed, for the technician's "sending n%".
        Only a display hint: resuming always asks the county for its offset. Written
        by ``relay.edge.bundle_progress`` only."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE bundles SET uploaded = ? WHERE bundle_id = ?",
                               (offset, bundle_id))

    # --- removal ----------------------------------------------------------------------
    def drop(self, bundle_id: str) -> None:
        """Forget a bundle (completed, or rejected and to be rebuilt): rows, then file.
        Its instances become packable again unless the journal marked them sent."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM bundle_instances WHERE bundle_id = ?", (bundle_id,))
            self._conn.execute("DELETE FROM bundles WHERE bundle_id = ?", (bundle_id,))
        with contextlib.suppress(FileNotFoundError):
            self._path(bundle_id).unlink()


def uploaded_bytes(root: Path) -> dict[int, int]:
    """Per spool entry id, the bytes of it already at the county inside bundles still
    in flight (each bundle's confirmed offset shared out over its instances by size).
    Read-only, safe beside a running agent; empty when there is no outbox yet."""
    path = root / OUTBOX_DB_NAME
    if not path.is_file():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute(
            "SELECT bi.entry_id, bi.size, b.raw_bytes, b.size, b.uploaded FROM bundle_instances bi"
            " JOIN bundles b ON b.bundle_id = bi.bundle_id WHERE b.uploaded > 0").fetchall()
    except sqlite3.OperationalError:  # an outbox from before progress was kept
        return {}
    finally:
        conn.close()
    # The offset counts encoded (maybe compressed) bytes; the fraction is what carries over.
    return {int(entry): int(size) * min(int(uploaded), int(encoded)) // max(int(encoded), 1)
            for entry, size, _raw, encoded, uploaded in rows}

"""The edge's durable spool: instance files on disk plus a SQLite journal.

``Spool.store`` returns, and so the modality gets C-STORE Success, only after the
bytes are flushed (into a slot made ahead of time, ``relay.edge.slots``: ``pwrite`` +
``fdatasync``; or to a new file under ``objects/``, fsynced with its folder) and the
journal row is committed (``relay.edge.journal``: WAL, ``synchronous=FULL``).

The journal is the single source of truth: a file is forwardable if and only if it
has a journal row. Hence no temp file and rename, and recovery on open: a file
without a row is deleted (it was never acknowledged), a pending row without its file
is kept and alarms, ``tmp/`` (written by earlier versions) is emptied. The layout
under the spool root and the reasoning: docs/design/edge-spool.md.

Thread-safe: the SCP calls ``store`` from association threads while the forwarder
reads batches. One SQLite connection guarded by a lock; file writes run outside the
lock, with a per-file claim so two associations storing the same bytes at once cannot
race on one path.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import logging
import sqlite3
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from relay.dicom.header import InstanceIds
from relay.dicom.keys import check_uid
from relay.dicom.vocab import IngestOutcome, Priority
from relay.edge import completeness, durable, journal, slots
from relay.edge.clock import iso
from relay.edge.clock import now_utc
from relay.edge.completeness import StudyInfo, StudyPolicy, StudyRow
from relay.edge.durable import fsync_dir, make_dirs
from relay.edge.journal import JOURNAL_NAME, SpoolCounts, SpoolEntry, SpoolState, journal_counts

log = logging.getLogger(__name__)

LOCK_NAME = "spool.lock"
TMP_DIR = "tmp"
OBJECTS_DIR = "objects"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
WRITER_THREADS = 8
"""Threads writing and fsyncing instance files (``Spool.begin_store``); one per
concurrent association is plenty, as each store waits for its own write."""
class StoreOutcome(enum.StrEnum):
    """What ``Spool.store`` did with one received instance."""

    SPOOLED = "spooled"
    """New (UID, bytes): file written and journaled."""
    DUPLICATE = "duplicate"
    """Same UID and same bytes as an existing row: nothing written."""


class SpoolLocked(RuntimeError):
    """Another process holds this spool; two agents on one spool would corrupt it."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The journal row an acknowledged instance is recorded in."""

    entry_id: int
    outcome: StoreOutcome
    sha256: str
    size: int


@dataclass(slots=True)
class _Claim:
    """A lock on one spool path while a store of it is in progress."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class PendingStore:
    """One store between ``Spool.begin_store`` and ``commit``/``discard`` (exactly one
    of them, from the thread that began it); holds the claim on the file's path."""

    def __init__(self, spool: "Spool", *, rel: str, sha256: str, size: int,
                 duplicate_of: int | None, write: "Future[None] | None",
                 claim: contextlib.ExitStack) -> None:
        self._spool, self._rel, self.sha256, self.size = spool, rel, sha256, size
        self._duplicate_of, self._write, self._claim = duplicate_of, write, claim

    def commit(self, *, ids: InstanceIds, priority: Priority, calling_ae: str, peer: str,
               study: StudyInfo | None = None, stat_reason: str | None = None) -> StoreResult:
        """Wait for the durable write, then journal the instance; raises OSError as
        ``Spool.store`` does, leaving no file behind."""
        spool = self._spool
        with self._claim:
            if self._duplicate_of is not None:
                return StoreResult(self._duplicate_of, StoreOutcome.DUPLICATE, self.sha256, self.size)
            assert self._write is not None
            self._write.result()
            try:
                entry_id = spool._insert(ids=ids, sha256=self.sha256, rel=self._rel,
                                         size=self.size, priority=priority,
                                         calling_ae=calling_ae, peer=peer, study=study,
                                         stat_reason=stat_reason)
            except BaseException:
                (spool.root / self._rel).unlink(missing_ok=True)  # not acknowledged: not kept
                raise
        spool._new_work.set()
        return StoreResult(entry_id, StoreOutcome.SPOOLED, self.sha256, self.size)

    def discard(self) -> None:
        """The instance is refused: wait for the write and remove its file."""
        with self._claim:
            if self._write is None:
                return
            try:
                self._write.result()
            except Exception:  # a failed write left nothing behind (write_durably)
                return
            (self._spool.root / self._rel).unlink(missing_ok=True)


class Spool:
    """Files plus journal of instances received and not yet known to be at the county.

    ``root``: the spool folder (``Settings.edge_spool_dir``); created if missing.
    Opening takes an exclusive lock on the folder and runs the recovery described
    in the module docstring. Close with ``close()`` or use as a context manager.
    """

    def __init__(self, root: Path, *, policy: StudyPolicy | None = None, slot_count: int = 0,
                 slot_bytes: int = 1 << 20, keep_free_bytes: int = 0) -> None:
        self.root = root.resolve()
        self.policy = policy or StudyPolicy()
        """When studies are ready; the default (all zero) makes every study ready at once."""
        self._tmp = self.root / TMP_DIR
        self._objects = self.root / OBJECTS_DIR
        self._lock = threading.Lock()
        self._claims: dict[str, _Claim] = {}
        self._new_work = threading.Event()
        self._writer_pool: ThreadPoolExecutor | None = None
        self._slots: slots.SlotPool | None = None
        self._lock_fh = self._take_folder_lock()
        try:
            self._make_layout()
            self._conn = journal.connect(self.root / JOURNAL_NAME)
            self._migrate()
            fsync_dir(self.root)  # the journal's own name (and -wal), when just created
            self._recover()
            if slot_count > 0:
                self._slots = slots.SlotPool(
                    self.root / slots.SLOTS_DIR, target=slot_count, slot_bytes=slot_bytes,
                    keep_free_bytes=keep_free_bytes, in_use=self._journaled_slots())
        except BaseException:
            self._lock_fh.close()
            raise

    # --- lifecycle -------------------------------------------------------------------
    def _take_folder_lock(self) -> TextIO:
        make_dirs(self.root)
        fh = open(self.root / LOCK_NAME, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise SpoolLocked(f"spool {self.root} is in use by another process") from exc
        return fh

    def _make_layout(self) -> None:
        """Create tmp/ and all 256 shard folders up front, fsyncing their parents once,
        so that no store ever lands in a folder whose own entry is not yet durable."""
        self._tmp.mkdir(exist_ok=True)
        self._objects.mkdir(exist_ok=True)
        (self.root / slots.SLOTS_DIR).mkdir(exist_ok=True)
        for shard in range(256):
            (self._objects / f"{shard:02x}").mkdir(exist_ok=True)
        fsync_dir(self._objects)
        fsync_dir(self.root)

    def _migrate(self) -> None:
        journal.migrate(self._conn, extra_schema=completeness.STUDIES_SCHEMA)

    def close(self) -> None:
        """Close the journal and release the folder lock."""
        if self._writer_pool is not None:
            self._writer_pool.shutdown(wait=True)
        if self._slots is not None:
            self._slots.close()
        with self._lock:
            self._conn.close()
        self._lock_fh.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- recovery ----------------------------------------------------------------------
    def _recover(self) -> None:
        for leftover in self._tmp.iterdir():
            log.warning("removing unfinished write %s (never acknowledged)", leftover.name)
            leftover.unlink()
        journaled = {row[0] for row in self._conn.execute("SELECT path FROM instances")}
        for shard in sorted(self._objects.iterdir()):
            for file in shard.iterdir():
                rel = file.relative_to(self.root).as_posix()
                if rel not in journaled:
                    log.warning("removing unjournaled file %s (never acknowledged)", rel)
                    file.unlink()
        self._report_missing_files()

    def _journaled_slots(self) -> set[str]:
        prefix = f"{slots.SLOTS_DIR}/"
        rows = self._conn.execute("SELECT path FROM instances WHERE path LIKE ?", (prefix + "%",))
        return {row[0][len(prefix):] for row in rows}

    @property
    def slot_pool(self) -> "slots.SlotPool | None":
        """The pool of files made ahead of time, if this spool has one."""
        return self._slots

    def _report_missing_files(self) -> None:
        rows = self._conn.execute(
            "SELECT id, sop_uid, path FROM instances WHERE state = ?", (SpoolState.SPOOLED,)
        )
        for row in rows:
            if not (self.root / row["path"]).is_file():
                log.error("pending instance id=%d sop=%s: file %s is missing",
                          row["id"], row["sop_uid"], row["path"])

    # --- store (SCP side) --------------------------------------------------------------
    @contextlib.contextmanager
    def _claim(self, key: str) -> Iterator[None]:
        """Serialise stores of the same file; different files proceed in parallel."""
        with self._lock:
            claim = self._claims.setdefault(key, _Claim())
            claim.users += 1
        try:
            with claim.lock:
                yield
        finally:
            with self._lock:
                claim.users -= 1
                if claim.users == 0:
                    del self._claims[key]

    def store(
        self, data: bytes, *, ids: InstanceIds, priority: Priority, calling_ae: str, peer: str,
        study: StudyInfo | None = None, stat_reason: str | None = None, sha256: str | None = None,
    ) -> StoreResult:
        """Keep one received instance durably; only then may the SCP answer Success.

        The same SOP Instance UID with the same bytes again is a no-op (``DUPLICATE``);
        the same UID with other bytes gets a row of its own, and the county decides
        (it quarantines the conflict). Raises OSError (ENOSPC when the disk is full).
        ``study``: header facts of a study new to the journal (see ``knows_study``);
        ``stat_reason``: why ``priority`` is STAT, kept with the study. ``sha256``: the
        digest of ``data`` if the caller already has it (the SCP hashes while receiving).
        """
        pending = self.begin_store(data, sop_uid=ids.sop_uid, sha256=sha256)
        return pending.commit(ids=ids, priority=priority, calling_ae=calling_ae, peer=peer,
                              study=study, stat_reason=stat_reason)

    def begin_store(self, data: bytes, *, sop_uid: str, sha256: str | None = None) -> "PendingStore":
        """Start keeping ``data`` (the instance the request names ``sop_uid``): its file
        is written and fsynced on a writer thread while the caller parses and checks
        the dataset; then the caller calls ``commit`` (journal row: the instance is the
        edge's) or ``discard`` (file removed: refused, never acknowledged). The overlap
        matters where pydicom parses (implicit VR, big endian, deflated) and for
        a study's first instance, whose header is decoded for the page.
        """
        check_uid(sop_uid)  # it names a file: never a path of a sender's choosing (ValueError)
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        if not _SHA256_HEX.fullmatch(sha256):
            raise ValueError("not a lowercase hex SHA-256")
        rel = f"{OBJECTS_DIR}/{sha256[:2]}/{sop_uid}.{sha256}.dcm"
        claim = contextlib.ExitStack()
        claim.enter_context(self._claim(rel))
        try:
            existing = self._find_id(sop_uid, sha256)
            future = None
            if existing is None:
                slot = self._slots.take(len(data)) if self._slots is not None else None
                if slot is not None:
                    rel = f"{slots.SLOTS_DIR}/{slot}"
                    future = self._writers().submit(slots.write_slot, data, path=self.root / rel)
                else:
                    future = self._writers().submit(durable.write_durably, data, final=self.root / rel)
        except BaseException:
            claim.close()
            raise
        return PendingStore(self, rel=rel, sha256=sha256, size=len(data),
                            duplicate_of=existing, write=future, claim=claim)

    def _writers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._writer_pool is None:
                self._writer_pool = ThreadPoolExecutor(
                    max_workers=WRITER_THREADS, thread_name_prefix="spool-writer")
            return self._writer_pool

    def _find_id(self, sop_uid: str, sha256: str) -> int | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM instances WHERE sop_uid = ? AND sha256 = ?", (sop_uid, sha256)
            ).fetchone()
        return None if row is None else int(row[0])

    def _insert(self, *, ids: InstanceIds, sha256: str, rel: str, size: int,
                priority: Priority, calling_ae: str, peer: str,
                study: StudyInfo | None = None, stat_reason: str | None = None) -> int:
        now = iso(now_utc())
        try:
            with self._lock, self._conn:
                late, priority = completeness.record_instance(
                    self._conn, study_uid=ids.study_uid, at=now, priority=priority,
                    stat_reason=stat_reason, calling_ae=calling_ae, info=study)
                values = (ids.sop_uid, sha256, ids.sop_class_uid, ids.study_uid,
                          ids.series_uid, ids.transfer_syntax_uid, rel, size, priority.value,
                          priority.rank, calling_ae, peer, now, now, int(late))
                cur = self._conn.execute(
                    "INSERT INTO instances (sop_uid, sha256, sop_class_uid, study_uid,"
                    " series_uid, transfer_syntax_uid, path, size, priority, priority_rank,"
                    " calling_ae, peer, received_at, next_attempt_at, late)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise journal.as_os_error(exc) from exc

    # --- forwarder side ---------------------------------------------------------------
    def next_batch(self, limit: int, *, now: datetime | None = None) -> list[SpoolEntry]:
        """Pending instances that are due, of studies that are ready (quiet, or waited
        long enough: ``completeness``), most urgent first, then oldest first. Their
        studies are marked released: instances arriving later are additions (late)."""
        moment = now or now_utc()
        ready, params = completeness.ready_clause(self.policy, moment)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT i.* FROM instances i {completeness.READY_JOIN}"
                f" WHERE i.state = ? AND i.next_attempt_at <= ? AND {ready}"
                " ORDER BY i.priority_rank, i.received_at, i.id LIMIT ?",
                (SpoolState.SPOOLED, iso(moment), *params, limit),
            ).fetchall()
            if rows:
                with self._conn:
                    completeness.release(self._conn, study_uids={r["study_uid"] for r in rows},
                                         at=iso(moment))
        return [journal.entry_from_row(self.root, row) for row in rows]

    def mark_sent(self, entry_id: int, *, outcome: IngestOutcome) -> None:
        """The county holds the instance durably; it leaves the pending set."""
        with self._lock, self._conn:
            journal.mark_sent(self._conn, [(entry_id, outcome)], at=now_utc(), pending_only=False)

    def prune_sent(self, *, older_than: timedelta, now: datetime | None = None) -> tuple[int, int]:
        """Delete files of instances the county confirmed more than ``older_than`` ago;
        return (files, bytes). The journal rows stay, with the path emptied, so a
        re-send of the same bytes is still recognised as a duplicate."""
        cutoff = iso((now or now_utc()) - older_than)
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, path, size FROM instances WHERE state = ? AND path != '' AND sent_at <= ?",
                (SpoolState.SENT, cutoff)).fetchall()
        for row in rows:  # unlink first: a crash in between leaves a row a later prune finishes
            (self.root / row["path"]).unlink(missing_ok=True)
            with self._lock, self._conn:
                self._conn.execute("UPDATE instances SET path = '' WHERE id = ?", (row["id"],))
        return len(rows), sum(int(row["size"]) for row in rows)

    def mark_failed(self, entry_id: int, *, error: str, next_attempt_at: datetime) -> None:
        """Record a failed upload; the instance stays pending and is due again later."""
        self.mark_failed_many([entry_id], error=error, next_attempt_at=next_attempt_at)

    def mark_sent_many(self, outcomes: Sequence[tuple[int, IngestOutcome]]) -> None:
        """``mark_sent`` for a whole bundle in one commit (one fsync, not one per
        instance). Rows already sent are left as they are, so a repeat is a no-op."""
        with self._lock, self._conn:
            journal.mark_sent(self._conn, outcomes, at=now_utc())

    def mark_failed_many(self, entry_ids: Sequence[int], *, error: str,
                         next_attempt_at: datetime) -> None:
        """``mark_failed`` for every instance of a failed bundle, in one commit."""
        with self._lock, self._conn:
            journal.mark_failed(self._conn, entry_ids, error=error,
                                next_attempt_at=next_attempt_at)

    # --- studies (SCP, status page) -------------------------------------------------
    def knows_study(self, study_uid: str) -> bool:
        """True if the journal tracks this study already (its header facts are cached)."""
        with self._lock:
            return completeness.study_known(self._conn, study_uid)

    def mark_study_stat(self, study_uid: str, *, reason: str = "technician") -> bool:
        """Make a study and its pending instances STAT (the technician's button);
        False if the study is unknown."""
        with self._lock, self._conn:
            found = completeness.escalate(self._conn, study_uid=study_uid,
                                          priority=Priority.STAT, reason=reason)
        if found:
            self._new_work.set()
        return found

    def studies(self, *, since: datetime, now: datetime | None = None,
                uploading: dict[int, int] | None = None) -> list[StudyRow]:
        """Studies first seen since ``since`` with their phase, for the status page;
        ``uploading`` as in ``completeness.list_studies``."""
        with self._lock:
            return completeness.list_studies(self._conn, since=since, policy=self.policy,
                                             now=now or now_utc(), uploading=uploading)

    def wait_for_new(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until something new was stored."""
        woke = self._new_work.wait(timeout)
        self._new_work.clear()
        return woke

    def wake(self) -> None:
        """Make a waiting ``wait_for_new`` return now (used on shutdown)."""
        self._new_work.set()

    def counts(self, *, now: datetime | None = None) -> SpoolCounts:
        """Pending and sent totals, and the age of the oldest pending instance."""
        with self._lock:
            return journal.journal_counts(self._conn, now=now or now_utc())

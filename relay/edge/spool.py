"""The edge's durable spool: instance files on disk plus a SQLite journal.

An instance is acknowledged to the modality (C-STORE Success) only after
``Spool.store`` has returned, and ``store`` returns only after

1. the bytes are written and flushed, either
   a. into a *slot*, a file made and made durable ahead of time (``relay.edge.slots``):
      ``pwrite`` + ``fdatasync``, one data flush, when the spool has a slot pool and
      the instance fits; or
   b. to ``objects/<sha256[:2]>/<sop_uid>.<sha256>.dcm``, fsynced, and that directory
      fsynced (the file's name itself is durable);
2. the journal row is committed (WAL, ``synchronous=FULL``: the commit is on disk).

No temp file and rename: a half-written file under its final name is harmless,
because only a journal row makes a file forwardable and the row is committed after
the fsyncs (recovery below deletes it). Writing in place saves a rename and, on
ext4, a second journal commit per instance (bench/ingest.py).

The journal is the single source of truth: a file is forwardable if and only if it
has a journal row. Recovery on open follows from that:

* ``tmp/`` is emptied (spools written by earlier versions, which wrote there first).
* A file under ``objects/`` without a journal row is deleted (and logged). The
  process died while writing it or before the commit, so the modality never got
  Success for it and will resend it (or its operator sees the failure). Adopting
  it would mean forwarding something the edge never took responsibility for,
  without the priority, calling AE and receive time that only the journal holds.
* A pending journal row whose file is missing is logged as an error; it is kept,
  and the forwarder keeps failing (and alarming) on it rather than forgetting it.

Layout under the spool root::

    spool.lock          exclusive flock: one agent per spool
    journal.sqlite3     the journal (plus -wal / -shm): instances, and studies
                        (relay.edge.completeness: quiet period, STAT, additions)
    tmp/                unused; emptied on open (older versions wrote there first)
    objects/00..ff/     one file per (SOP Instance UID, SHA-256)
    slots/              files made ahead of time; a used one holds one instance in its
                        first ``size`` bytes (the journal row says which and how many)

Thread-safe: the SCP calls ``store`` from association threads while the forwarder
reads batches. One SQLite connection guarded by a lock; file writes run outside the
lock so associations write in parallel, with a per-file claim so two associations
storing the same bytes at once cannot race on one path.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from relay.dicom.header import InstanceIds
from relay.dicom.vocab import IngestOutcome, Priority
from relay.edge import completeness, durable, slots
from relay.edge.clock import iso as iso  # re-exported: tests and older importers
from relay.edge.clock import now_utc
from relay.edge.durable import fsync_dir, make_dirs
from relay.edge.completeness import StudyInfo, StudyPolicy, StudyRow

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite3"
LOCK_NAME = "spool.lock"
TMP_DIR = "tmp"
OBJECTS_DIR = "objects"
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the journal; bump with a migration step in ``_migrate``.
2: ``studies`` table and ``instances.late`` (study completeness, additions)."""
WRITER_THREADS = 8
"""Threads writing and fsyncing instance files (``Spool.begin_store``); one per
concurrent association is plenty, as each store waits for its own write."""
MAX_ERROR_CHARS = 500
"""Longest ``last_error`` kept per row: enough for a status line and a problem title."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id                  INTEGER PRIMARY KEY,
    sop_uid             TEXT NOT NULL,
    sha256              TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    path                TEXT NOT NULL,      -- relative to the spool root
    size                INTEGER NOT NULL,   -- bytes of the stored Part 10 file
    priority            TEXT NOT NULL,      -- relay.dicom.vocab.Priority value
    priority_rank       INTEGER NOT NULL,   -- Priority.rank, so SQL can order by it
    calling_ae          TEXT NOT NULL,
    peer                TEXT NOT NULL,      -- host:port of the sending modality
    received_at         TEXT NOT NULL,      -- UTC ISO 8601, when Success was due
    state               TEXT NOT NULL DEFAULT 'spooled',  -- 'spooled' | 'sent'
    sent_at             TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT NOT NULL,      -- UTC ISO 8601; due when <= now
    last_error          TEXT,
    county_outcome      TEXT,               -- IngestOutcome value once sent
    late                INTEGER NOT NULL DEFAULT 0,  -- 1: arrived after its study was released
    UNIQUE (sop_uid, sha256)
);
CREATE INDEX IF NOT EXISTS instances_due
    ON instances (state, priority_rank, received_at, next_attempt_at);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid);
"""


class SpoolState(enum.StrEnum):
    """Where one journaled instance is on its way to the county."""

    SPOOLED = "spooled"
    """Durable at the edge and acknowledged to the modality; not yet at the county."""
    SENT = "sent"
    """The county answered 200 with an outcome: it holds the bytes durably."""


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


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One pending instance, as the forwarder needs it."""

    entry_id: int
    sop_uid: str
    sha256: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    path: Path
    size: int
    priority: Priority
    calling_ae: str
    received_at: str
    attempts: int
    late: bool = False
    """Arrived after its study was handed to the forwarder: an addition to the study."""


@dataclass(frozen=True, slots=True)
class SpoolCounts:
    """What `relay edge status` shows about the spool."""

    pending: int
    pending_bytes: int
    retrying: int
    """Pending instances that have failed at least once."""
    sent: int
    oldest_pending_received_at: str | None
    oldest_pending_age_s: float | None
    last_error: str | None
    """Most recent error of a pending instance, if any."""


@dataclass(slots=True)
class _Claim:
    """A lock on one spool path while a store of it is in progress."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


utc_now = now_utc
"""Kept for importers of ``relay.edge.spool.utc_now``; the clock is ``relay.edge.clock``."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is fsynced before it returns; NORMAL could lose the last
    # commits on power loss, i.e. instances already acknowledged to a modality.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _as_os_error(exc: sqlite3.Error) -> Exception:
    """A full disk under the journal is reported like a full disk under the files."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return OSError(errno.ENOSPC, f"journal: {exc}")
    return exc


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
            self._conn = _connect(self.root / JOURNAL_NAME)
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
        with self._conn:
            self._conn.executescript(_SCHEMA + completeness.STUDIES_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(instances)")}
            if "late" not in columns:  # journal of schema version 1
                self._conn.execute(
                    "ALTER TABLE instances ADD COLUMN late INTEGER NOT NULL DEFAULT 0")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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
        matters where pydicom parses (implicit VR, big endian, deflated: ~0.4 ms) and for
        a study's first instance, whose header is decoded for the page.
        """
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
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
            raise _as_os_error(exc) from exc

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
        return [self._entry(row) for row in rows]

    def _entry(self, row: sqlite3.Row) -> SpoolEntry:
        return SpoolEntry(
            entry_id=row["id"], sop_uid=row["sop_uid"], sha256=row["sha256"],
            sop_class_uid=row["sop_class_uid"], study_uid=row["study_uid"],
            series_uid=row["series_uid"], path=self.root / row["path"], size=row["size"],
            priority=Priority(row["priority"]), calling_ae=row["calling_ae"],
            received_at=row["received_at"], attempts=row["attempts"], late=bool(row["late"]),
        )

    def mark_sent(self, entry_id: int, *, outcome: IngestOutcome) -> None:
        """The county holds the instance durably; it leaves the pending set."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE instances SET state = ?, sent_at = ?, county_outcome = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (SpoolState.SENT, iso(now_utc()), outcome.value, entry_id),
            )

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
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE instances SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ? AND state = ?",
                (error[:MAX_ERROR_CHARS], iso(next_attempt_at), entry_id, SpoolState.SPOOLED),
            )

    def mark_sent_many(self, outcomes: Sequence[tuple[int, IngestOutcome]]) -> None:
        """``mark_sent`` for a whole bundle in one commit (one fsync, not one per
        instance). Rows already sent are left as they are, so a repeat is a no-op."""
        now = iso(now_utc())
        with self._lock, self._conn:
            self._conn.executemany(
                "UPDATE instances SET state = ?, sent_at = ?, county_outcome = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = ?",
                [(SpoolState.SENT, now, outcome.value, entry_id, SpoolState.SPOOLED)
                 for entry_id, outcome in outcomes],
            )

    def mark_failed_many(self, entry_ids: Sequence[int], *, error: str,
                         next_attempt_at: datetime) -> None:
        """``mark_failed`` for every instance of a failed bundle, in one commit."""
        with self._lock, self._conn:
            self._conn.executemany(
                "UPDATE instances SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ? AND state = ?",
                [(error[:MAX_ERROR_CHARS], iso(next_attempt_at), entry_id, SpoolState.SPOOLED)
                 for entry_id in entry_ids],
            )

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
            return journal_counts(self._conn, now=now or now_utc())


def journal_counts(conn: sqlite3.Connection, *, now: datetime) -> SpoolCounts:
    """Counts from an open journal connection (shared by ``Spool`` and ``read_counts``)."""
    pending, pending_bytes, retrying, oldest = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(attempts > 0), 0),"
        " MIN(received_at) FROM instances WHERE state = ?", (SpoolState.SPOOLED,)
    ).fetchone()
    (sent,) = conn.execute(
        "SELECT COUNT(*) FROM instances WHERE state = ?", (SpoolState.SENT,)
    ).fetchone()
    error_row = conn.execute(
        "SELECT last_error FROM instances WHERE state = ? AND last_error IS NOT NULL"
        " ORDER BY next_attempt_at DESC LIMIT 1", (SpoolState.SPOOLED,)
    ).fetchone()
    age = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else None
    return SpoolCounts(
        pending=int(pending), pending_bytes=int(pending_bytes), retrying=int(retrying),
        sent=int(sent), oldest_pending_received_at=oldest, oldest_pending_age_s=age,
        last_error=error_row[0] if error_row else None,
    )


def read_counts(root: Path, *, now: datetime | None = None) -> SpoolCounts | None:
    """Counts of the spool at ``root`` without opening it as a ``Spool``.

    For `relay edge status` while the agent runs: no folder lock, no recovery (which
    would delete the running agent's writes in progress). None if there is no journal.
    """
    path = root / JOURNAL_NAME
    if not path.is_file():
        return None
    conn = sqlite3.connect(path, timeout=10.0)
    try:
        return journal_counts(conn, now=now or now_utc())
    finally:
        conn.close()

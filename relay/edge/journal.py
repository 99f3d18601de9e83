"""The spool's journal: one SQLite row per received instance, the single source of
truth for what the edge holds and what the county confirmed (``relay.edge.spool``
keeps the files and calls these under its lock). Schema, connection settings,
migration, the forwarder's updates and the counts `relay edge status` shows.
"""

from __future__ import annotations

import enum
import errno
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.dicom.vocab import IngestOutcome, Priority
from relay.edge.clock import iso, now_utc

JOURNAL_NAME = "journal.sqlite3"
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the journal; bump with a migration step in ``migrate``.
2: ``studies`` table and ``instances.late`` (study completeness, additions)."""
MAX_ERROR_CHARS = 500
"""Longest ``last_error`` kept per row: enough for a status line and a problem title."""

SCHEMA = """
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


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is fsynced before it returns; NORMAL could lose the last
    # commits on power loss, i.e. instances already acknowledged to a modality.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def as_os_error(exc: sqlite3.Error) -> Exception:
    """A full disk under the journal is reported like a full disk under the files."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return OSError(errno.ENOSPC, f"journal: {exc}")
    return exc


def migrate(conn: sqlite3.Connection, *, extra_schema: str = "") -> None:
    """Create or upgrade the journal to ``SCHEMA_VERSION``; ``extra_schema``: tables
    of other parts kept in the same file (``completeness.STUDIES_SCHEMA``)."""
    with conn:
        conn.executescript(SCHEMA + extra_schema)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
        if "late" not in columns:  # journal of schema version 1
            conn.execute("ALTER TABLE instances ADD COLUMN late INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def entry_from_row(root: Path, row: sqlite3.Row) -> SpoolEntry:
    """A pending instance as the forwarder needs it; ``root``: the spool folder."""
    return SpoolEntry(
        entry_id=row["id"], sop_uid=row["sop_uid"], sha256=row["sha256"],
        sop_class_uid=row["sop_class_uid"], study_uid=row["study_uid"],
        series_uid=row["series_uid"], path=root / row["path"], size=row["size"],
        priority=Priority(row["priority"]), calling_ae=row["calling_ae"],
        received_at=row["received_at"], attempts=row["attempts"], late=bool(row["late"]),
    )


def mark_sent(conn: sqlite3.Connection, outcomes: Sequence[tuple[int, IngestOutcome]], *,
              at: datetime, pending_only: bool = True) -> None:
    """The county holds these instances durably (the caller commits). With
    ``pending_only``, rows already sent are left as they are (a repeat is a no-op)."""
    sql = ("UPDATE instances SET state = ?, sent_at = ?, county_outcome = ?,"
           " attempts = attempts + 1, last_error = NULL WHERE id = ?")
    rows = [(SpoolState.SENT, iso(at), outcome.value, entry_id) for entry_id, outcome in outcomes]
    if pending_only:
        conn.executemany(sql + " AND state = ?", [(*row, SpoolState.SPOOLED) for row in rows])
    else:
        conn.executemany(sql, rows)


def mark_failed(conn: sqlite3.Connection, entry_ids: Sequence[int], *, error: str,
                next_attempt_at: datetime) -> None:
    """A failed upload of these pending instances: due again at ``next_attempt_at``."""
    conn.executemany(
        "UPDATE instances SET attempts = attempts + 1, last_error = ?,"
        " next_attempt_at = ? WHERE id = ? AND state = ?",
        [(error[:MAX_ERROR_CHARS], iso(next_attempt_at), entry_id, SpoolState.SPOOLED)
         for entry_id in entry_ids],
    )


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


@dataclass(frozen=True, slots=True)
class Holding:
    """One journaled version (SOP Instance UID + bytes) of an instance, as storage
    commitment judges it."""

    sop_uid: str
    sop_class_uid: str
    sha256: str
    state: SpoolState
    county_outcome: IngestOutcome | None
    path: str
    """Relative to the spool root; '' once retention deleted the file (state sent)."""


LOOKUP_CHUNK = 500
"""SOP Instance UIDs per ``holdings`` query, below SQLite's host-parameter limit."""


def holdings(conn: sqlite3.Connection, sop_uids: Sequence[str]) -> dict[str, list[Holding]]:
    """Every journaled version of each of ``sop_uids`` (absent UIDs are left out)."""
    found: dict[str, list[Holding]] = {}
    unique = sorted(set(sop_uids))
    for start in range(0, len(unique), LOOKUP_CHUNK):
        chunk = unique[start:start + LOOKUP_CHUNK]
        rows = conn.execute(
            "SELECT sop_uid, sop_class_uid, sha256, state, county_outcome, path FROM instances"
            f" WHERE sop_uid IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)
        for uid, sop_class, sha256, state, outcome, path in rows:
            found.setdefault(uid, []).append(Holding(
                sop_uid=uid, sop_class_uid=sop_class, sha256=sha256, state=SpoolState(state),
                county_outcome=IngestOutcome(outcome) if outcome else None, path=path))
    return found


def read_holdings(root: Path, sop_uids: Sequence[str]) -> dict[str, list[Holding]]:
    """``holdings`` of the spool at ``root`` through a read-only connection of its own
    (safe beside the running spool: WAL readers do not block its writer). Empty if
    there is no journal yet."""
    path = root / JOURNAL_NAME
    if not path.is_file():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return holdings(conn, sop_uids)
    finally:
        conn.close()

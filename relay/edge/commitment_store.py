"""Storage commitment transactions kept in ``<spool>/commitments.sqlite3``: a request
is recorded (``synchronous=FULL``) before the N-ACTION is answered Success, each item's
outcome once decided, and the report's delivery, so a restart still reports every
transaction and reports none twice. Idempotent on the Transaction UID.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.edge.clock import iso
from relay.edge.durable import create_durable_db, durable_db

COMMITMENTS_NAME = "commitments.sqlite3"
MAX_ERROR_CHARS = 500
"""Longest ``last_error`` kept per transaction."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    transaction_uid TEXT PRIMARY KEY,
    calling_ae      TEXT NOT NULL,
    peer            TEXT NOT NULL,      -- host:port the N-ACTION came from
    policy          TEXT NOT NULL,      -- CommitPolicy value
    received_at     TEXT NOT NULL,      -- UTC ISO 8601
    decide_by       TEXT NOT NULL,      -- undecided items fail with 0x0110 after this
    state           TEXT NOT NULL,      -- TransactionState value
    attempts        INTEGER NOT NULL DEFAULT 0,   -- report deliveries tried
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    reported_at     TEXT,
    reported_via    TEXT                -- 'same association' or AE@host:port
);
CREATE TABLE IF NOT EXISTS items (
    transaction_uid TEXT NOT NULL REFERENCES transactions (transaction_uid),
    seq             INTEGER NOT NULL,   -- position in the Referenced SOP Sequence
    sop_class_uid   TEXT NOT NULL,
    sop_uid         TEXT NOT NULL,
    outcome         INTEGER,            -- NULL undecided, 0 committed, else the FailureReason
    PRIMARY KEY (transaction_uid, seq)
);
CREATE INDEX IF NOT EXISTS transactions_open ON transactions (state, next_attempt_at);
"""


class TransactionState(enum.StrEnum):
    """Where one storage commitment transaction is."""

    WAITING = "waiting"
    """Recorded; some items are not decided yet ('county' policy: not at the county)."""
    DUE = "due"
    """Every item decided; the N-EVENT-REPORT is to be delivered (or retried)."""
    REPORTED = "reported"
    """The modality answered the N-EVENT-REPORT with Success: done, never sent again."""


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of the request's Referenced SOP Sequence and what became of it."""

    seq: int
    sop_class_uid: str
    sop_uid: str
    outcome: int | None
    """None: undecided; 0: committed; otherwise the Failure Reason (0008,1197)."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """One recorded Request Storage Commitment."""

    transaction_uid: str
    calling_ae: str
    peer: str
    policy: str
    received_at: str
    decide_by: str
    state: TransactionState
    attempts: int
    next_attempt_at: str
    last_error: str | None
    reported_via: str | None
    items: tuple[Item, ...]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection: all of it or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class CommitmentStore:
    """The transactions file under the spool folder ``root`` (created if missing).
    Thread-safe: each call opens its own connection (requests are few and small)."""

    def __init__(self, root: Path) -> None:
        self.path = create_durable_db(root, COMMITMENTS_NAME, SCHEMA)

    def record(self, *, transaction_uid: str, calling_ae: str, peer: str, policy: str,
               items: Sequence[tuple[str, str]], at: datetime, decide_by: datetime) -> bool:
        """Record a request durably; False (nothing changed) if the Transaction UID is
        known already. ``items``: (SOP Class UID, SOP Instance UID) in request order."""
        with durable_db(self.path) as conn, _transaction(conn):
            cur = conn.execute(
                "INSERT OR IGNORE INTO transactions (transaction_uid, calling_ae, peer, policy,"
                " received_at, decide_by, state, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (transaction_uid, calling_ae, peer, policy, iso(at), iso(decide_by),
                 TransactionState.WAITING, iso(at)))
            if cur.rowcount:
                conn.executemany(
                    "INSERT INTO items (transaction_uid, seq, sop_class_uid, sop_uid)"
                    " VALUES (?, ?, ?, ?)",
                    [(transaction_uid, seq, cls, uid) for seq, (cls, uid) in enumerate(items)])
        return bool(cur.rowcount)

    def open_transactions(self, *, due_at: datetime | None = None) -> list[Transaction]:
        """Transactions not yet reported, oldest first; with ``due_at``, only those with
        items to decide or a report due by then (not those backing off)."""
        sql = "SELECT transaction_uid FROM transactions WHERE state != ?"
        params: tuple[str, ...] = (TransactionState.REPORTED,)
        if due_at is not None:
            sql += " AND (state = ? OR next_attempt_at <= ?)"
            params += (TransactionState.WAITING, iso(due_at))
        with durable_db(self.path) as conn:
            uids = [row[0] for row in conn.execute(sql + " ORDER BY received_at, transaction_uid",
                                                   params)]
            return [t for t in (self._load(conn, uid) for uid in uids) if t is not None]

    def prune_reported(self, *, before: datetime) -> int:
        """Forget transactions reported before ``before``; how many."""
        with durable_db(self.path) as conn, _transaction(conn):
            old = "SELECT transaction_uid FROM transactions WHERE state = ? AND reported_at < ?"
            params = (TransactionState.REPORTED, iso(before))
            conn.execute(f"DELETE FROM items WHERE transaction_uid IN ({old})", params)
            return conn.execute(f"DELETE FROM transactions WHERE transaction_uid IN ({old})",
                                params).rowcount

    def get(self, transaction_uid: str) -> Transaction | None:
        with durable_db(self.path) as conn:
            return self._load(conn, transaction_uid)

    @staticmethod
    def _load(conn: sqlite3.Connection, transaction_uid: str) -> Transaction | None:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM transactions WHERE transaction_uid = ?",
                           (transaction_uid,)).fetchone()
        if row is None:
            return None
        items = tuple(Item(seq=r["seq"], sop_class_uid=r["sop_class_uid"], sop_uid=r["sop_uid"],
                           outcome=r["outcome"]) for r in conn.execute(
            "SELECT * FROM items WHERE transaction_uid = ? ORDER BY seq", (transaction_uid,)))
        return Transaction(
            transaction_uid=row["transaction_uid"], calling_ae=row["calling_ae"],
            peer=row["peer"], policy=row["policy"], received_at=row["received_at"],
            decide_by=row["decide_by"], state=TransactionState(row["state"]),
            attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"], reported_via=row["reported_via"], items=items)

    def decide(self, transaction_uid: str, outcomes: Mapping[int, int], *, complete: bool) -> None:
        """Keep the outcomes of newly decided items (by ``seq``; a decided item is never
        changed); ``complete``: every item is decided, the report is due."""
        with durable_db(self.path) as conn, _transaction(conn):
            conn.executemany(
                "UPDATE items SET outcome = ? WHERE transaction_uid = ? AND seq = ? AND outcome IS NULL",
                [(outcome, transaction_uid, seq) for seq, outcome in outcomes.items()])
            if complete:
                conn.execute("UPDATE transactions SET state = ? WHERE transaction_uid = ? AND state = ?",
                             (TransactionState.DUE, transaction_uid, TransactionState.WAITING))

    def mark_reported(self, transaction_uid: str, *, via: str, at: datetime) -> None:
        with durable_db(self.path) as conn:
            conn.execute(
                "UPDATE transactions SET state = ?, reported_at = ?, reported_via = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE transaction_uid = ?",
                (TransactionState.REPORTED, iso(at), via, transaction_uid))

    def mark_failed(self, transaction_uid: str, *, error: str, next_attempt_at: datetime) -> None:
        """A delivery attempt failed; the report is due again at ``next_attempt_at``."""
        with durable_db(self.path) as conn:
            conn.execute(
                "UPDATE transactions SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE transaction_uid = ? AND state = ?",
                (error[:MAX_ERROR_CHARS], iso(next_attempt_at), transaction_uid,
                 TransactionState.DUE))

"""What the edge has done for each signed report coming home, step by step, on disk.

A delivery (one signed report or addendum, as the county lists it) goes through
steps: ``fetch`` (its objects downloaded), ``store:<AE@host:port>`` for each township
destination (C-STOREd there), and ``confirm`` (the county told it is delivered).
Each step of each delivery has its own state (done, attempts, next attempt, last
error), so a failing fetch does not hold the reports behind it, and a destination
that is down is retried on its own while the others are not sent the same report
again. The state is an SQLite file beside the spool's journal, committed with
``synchronous=FULL`` (fsynced, like the journal) so that it survives an edge restart
or a power cut: a report stored at a PACS before the cut is not stored there again.

Rows carry delivery ids, UIDs and AE titles only; no report text, no patient data
(the delivery's listing, kept here, has study UID, reader, revision and flags).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_NAME = "reports.sqlite3"
"""File name of the delivery state, in the edge's spool folder."""
FETCH, CONFIRM = "fetch", "confirm"
MAX_ERROR_CHARS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id INTEGER PRIMARY KEY,
    critical INTEGER NOT NULL,
    item TEXT NOT NULL,
    seen_at REAL NOT NULL,
    done_at REAL
);
CREATE TABLE IF NOT EXISTS steps (
    delivery_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    done_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (delivery_id, step)
);
"""


def store_step(destination: str) -> str:
    """The step name of storing at ``destination`` (``AE@host:port``)."""
    return f"store:{destination}"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of one delivery as recorded."""

    done: bool
    attempts: int
    next_at: float
    """Wall-clock seconds (epoch) before which the step is not tried again."""
    last_error: str | None


NOT_STARTED = Step(done=False, attempts=0, next_at=0.0, last_error=None)


class ReportState:
    """The delivery state file; one connection, used by the pickup thread (and read by
    others under its lock). ``close()`` when done."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STATE_NAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReportState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def remember(self, items: list[dict[str, Any]]) -> None:
        """Record deliveries the county lists; a known one keeps its state (its listing
        is refreshed while it is not fetched yet). One finished here that the county
        still lists has lost its confirmation there: only the confirmation is redone
        (idempotent), the destinations that hold it are not sent it again."""
        now = time.time()
        with self._lock, self._conn:
            for item in items:
                delivery_id = int(item["delivery_id"])
                reopened = self._conn.execute(
                    "UPDATE deliveries SET done_at = NULL WHERE delivery_id = ? AND done_at IS NOT NULL",
                    (delivery_id,)).rowcount
                if reopened:
                    self._conn.execute("DELETE FROM steps WHERE delivery_id = ? AND step = ?",
                                       (delivery_id, CONFIRM))
                self._conn.execute(
                    "INSERT INTO deliveries (delivery_id, critical, item, seen_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (delivery_id) DO UPDATE SET critical = excluded.critical, "
                    "item = excluded.item WHERE NOT EXISTS (SELECT 1 FROM steps WHERE "
                    "steps.delivery_id = excluded.delivery_id AND step = ? AND done_at IS NOT NULL)",
                    (delivery_id, int(bool(item.get("critical"))),
                     json.dumps(item, ensure_ascii=False), now, FETCH))

    def open_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries not finished yet, critical first, then oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT item FROM deliveries WHERE done_at IS NULL "
                                      "ORDER BY critical DESC, delivery_id").fetchall()
        return [json.loads(row[0]) for row in rows]

    def step(self, delivery_id: int, step: str) -> Step:
        with self._lock:
            row = self._conn.execute("SELECT done_at, attempts, next_at, last_error FROM steps "
                                     "WHERE delivery_id = ? AND step = ?", (delivery_id, step)).fetchone()
        if row is None:
            return NOT_STARTED
        return Step(done=row[0] is not None, attempts=int(row[1]), next_at=float(row[2]),
                    last_error=row[3])

    def due(self, delivery_id: int, step: str, *, now: float | None = None) -> bool:
        """Whether ``step`` is still to do and its backoff has passed."""
        found = self.step(delivery_id, step)
        return not found.done and found.next_at <= (time.time() if now is None else now)

    def succeeded(self, delivery_id: int, step: str) -> None:
        self._upsert(delivery_id, step, done_at=time.time(), next_at=0.0, error=None, failed=False)

    def failed(self, delivery_id: int, step: str, *, error: str, retry_in_s: float) -> None:
        self._upsert(delivery_id, step, done_at=None, next_at=time.time() + retry_in_s,
                     error=error[:MAX_ERROR_CHARS], failed=True)

    def finish(self, delivery_id: int) -> None:
        """Every step is done: the delivery is no longer worked on."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE deliveries SET done_at = ? WHERE delivery_id = ?",
                               (time.time(), delivery_id))

    def _upsert(self, delivery_id: int, step: str, *, done_at: float | None, next_at: float,
                error: str | None, failed: bool) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO steps (delivery_id, step, done_at, attempts, next_at, last_error) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id, step) DO UPDATE SET "
                "done_at = excluded.done_at, attempts = steps.attempts + excluded.attempts, "
                "next_at = excluded.next_at, last_error = excluded.last_error",
                (delivery_id, step, done_at, int(failed), next_at, error))

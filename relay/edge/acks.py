"""Acknowledgements of reports, journaled at the edge first and delivered to the county after.

A technician's 确认已阅 on the page is written to ``<spool>/acks.sqlite`` (WAL,
``synchronous=FULL``: the commit is on disk when the page answers, as an instance is
before its C-STORE Success), naming the logged-in technician and the edge's time. A
background loop delivers what is pending to the county (POST
/api/edges/reports/{id}/acknowledged with ``by`` and ``at``) at once and then every
``edge_ack_retry_s`` while the county cannot be reached: at least once, and the county
keeps the first. The page shows 已确认（待上传） until the county confirmed it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from relay.config import EdgeSettings
from relay.edge.durable import create_durable_db, durable_db
from relay.edge.http import county_client

log = logging.getLogger(__name__)

JOURNAL_NAME = "acks.sqlite"
REPORTS_PATH = "/api/edges/reports"
PERMANENT = frozenset({400, 404, 409, 410, 422})
"""County answers that no retry changes (unknown delivery, not a technician of the site)."""
STOP_POLL_S = 0.5
"""Seconds between checks of ``stop`` while the loop waits."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (
    delivery_id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    acknowledged_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    confirmed_at TEXT,
    last_error TEXT
);
"""


class AckState(enum.StrEnum):
    """Where an acknowledgement is on its way to the county."""

    PENDING = "pending"
    """On the edge's disk, not yet confirmed by the county (已确认（待上传）)."""
    CONFIRMED = "confirmed"
    """The county recorded it (已确认)."""
    REFUSED = "refused"
    """The county refused it for good (e.g. the login is not a technician of this site)."""


@dataclass(frozen=True, slots=True)
class Ack:
    delivery_id: int
    username: str
    display_name: str
    acknowledged_at: datetime
    state: AckState
    attempts: int = 0
    last_error: str | None = None


class AckJournal:
    """The edge's acknowledgements, durable before the page answers."""

    def __init__(self, root: Path) -> None:
        self.path = create_durable_db(root, JOURNAL_NAME, _SCHEMA)
        self.wake = threading.Event()
        """Set when an acknowledgement is recorded, so that the sender goes at once."""

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return durable_db(self.path)

    def record(self, *, delivery_id: int, username: str, display_name: str,
               at: datetime | None = None) -> Ack:
        """Journal that ``username`` acknowledged the delivery (on disk when this returns);
        the first acknowledgement of a delivery is kept, a second one returns it."""
        when = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
        with self._connect() as conn:
            conn.execute("INSERT OR IGNORE INTO acks (delivery_id, username, display_name, acknowledged_at, state) "
                         "VALUES (?, ?, ?, ?, ?)", (delivery_id, username, display_name, when, AckState.PENDING.value))
        self.wake.set()
        found = self.get(delivery_id)
        assert found is not None
        return found

    def get(self, delivery_id: int) -> Ack | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM acks WHERE delivery_id = ?", (delivery_id,)).fetchone()
        return None if row is None else _ack(row)

    def all(self) -> dict[int, Ack]:
        """Every acknowledgement by delivery id (the page shows their states)."""
        with self._connect() as conn:
            return {a.delivery_id: a for a in map(_ack, conn.execute("SELECT * FROM acks"))}

    def pending(self) -> list[Ack]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM acks WHERE state = ? ORDER BY acknowledged_at",
                                (AckState.PENDING.value,)).fetchall()
        return [_ack(row) for row in rows]

    def settle(self, delivery_id: int, state: AckState, *, error: str | None = None) -> None:
        """Record the county's final answer: confirmed, or refused with ``error``."""
        with self._connect() as conn:
            conn.execute("UPDATE acks SET state = ?, confirmed_at = ?, last_error = ?, attempts = attempts + 1 "
                         "WHERE delivery_id = ?", (state.value, datetime.now(UTC).isoformat(), error, delivery_id))

    def note_failure(self, delivery_id: int, error: str) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE acks SET attempts = attempts + 1, last_error = ? WHERE delivery_id = ?",
                         (error[:500], delivery_id))


def _ack(row: tuple[object, ...]) -> Ack:
    delivery_id, username, display_name, at, state, attempts, _confirmed, error = row
    return Ack(delivery_id=int(str(delivery_id)), username=str(username), display_name=str(display_name),
               acknowledged_at=datetime.fromisoformat(str(at)), state=AckState(str(state)),
               attempts=int(str(attempts)), last_error=None if error is None else str(error))


def deliver_pending(client: httpx.Client, journal: AckJournal) -> int:
    """Send every pending acknowledgement, oldest first; the number the county confirmed.
    Stops at the first one the county cannot take now (link down, 5xx), raising its error."""
    done = 0
    for ack in journal.pending():
        try:
            r = client.post(f"{REPORTS_PATH}/{ack.delivery_id}/acknowledged",
                            json={"by": ack.username, "at": ack.acknowledged_at.isoformat()})
        except httpx.HTTPError as exc:
            journal.note_failure(ack.delivery_id, type(exc).__name__)
            raise
        if r.status_code in PERMANENT:
            journal.settle(ack.delivery_id, AckState.REFUSED, error=f"county answered {r.status_code}")
            log.warning("acknowledgement of delivery %d refused by the county: %d", ack.delivery_id, r.status_code)
            continue
        if r.is_error:
            journal.note_failure(ack.delivery_id, f"county answered {r.status_code}")
            r.raise_for_status()
        journal.settle(ack.delivery_id, AckState.CONFIRMED)
        log.info("acknowledgement delivered delivery=%d attempts=%d", ack.delivery_id, ack.attempts + 1)
        done += 1
    return done


def run_delivery(settings: EdgeSettings, journal: AckJournal, stop: threading.Event) -> None:
    """Deliver pending acknowledgements until ``stop``: at once when one is recorded, else
    every ``edge_ack_retry_s``."""
    with county_client(settings, timeout=30.0) as client:
        while not stop.is_set():
            journal.wake.clear()
            try:
                deliver_pending(client, journal)
            except (httpx.HTTPError, sqlite3.Error) as exc:
                log.warning("acknowledgements not delivered yet (kept at the edge): %s", type(exc).__name__)
            _wait(stop, journal.wake, settings.edge_ack_retry_s)


def _wait(stop: threading.Event, wake: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and not wake.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        wake.wait(min(STOP_POLL_S, left))


def start_delivery(settings: EdgeSettings, journal: AckJournal, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_delivery, args=(settings, journal, stop), name="acks", daemon=True)
    thread.start()
    return thread

"""The township's technicians, cached at the edge so that they log in while the WAN is down.

The county is the only place accounts are made (`relay users create NAME --role
technician --site SITE`); the edge fetches its own site's technicians with the site
credential (GET /api/edges/technicians: username, display name, Argon2id hash, active)
every ``edge_technicians_poll_s`` and keeps them in ``<spool>/technicians.sqlite``
(``synchronous=FULL``). A failed fetch keeps the copy it has; a disabled account comes
without a hash and can no longer log in. Wrong passwords count per login, on disk, and
lock it for ``login_lockout_minutes`` after ``login_max_failures`` in a row; logins are
checked one at a time, so parallel guesses cannot race past the limit.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from relay.config import EdgeSettings
from relay.edge.durable import create_durable_db, durable_db
from relay.edge.http import county_client

log = logging.getLogger(__name__)

CACHE_NAME = "technicians.sqlite"
TECHNICIANS_PATH = "/api/edges/technicians"
RETRY_AFTER_FAILURE_S = 30.0
"""Seconds before the next fetch after a failed one (the county or the WAN down)."""
ARGON2ID = "$argon2id$"
"""Only Argon2id hashes are accepted from the county (its hasher's only output)."""

_hasher = PasswordHasher()
# Verified against when the login is unknown or disabled, so that it takes as long as a
# wrong password for a real one.
_DUMMY_HASH = _hasher.hash("relay-edge-no-such-technician")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS technicians (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    active INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Technician:
    """A logged-in technician, as the page names them."""

    username: str
    display_name: str


class LoginRefused(Exception):
    """Wrong username or password, or a locked login (``locked``); the page says which."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


class TechnicianCache:
    """The site's technicians on the edge's disk, with their failed-login counters."""

    def __init__(self, root: Path, *, max_failures: int = 5, lockout_minutes: float = 15.0) -> None:
        self.path = create_durable_db(root, CACHE_NAME, _SCHEMA)
        self.max_failures = max_failures
        self.lockout_s = lockout_minutes * 60.0
        self._login_lock = threading.Lock()

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return durable_db(self.path)

    def etag(self) -> str | None:
        """The county's ETag of the list held here (None before the first fetch)."""
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'etag'").fetchone()
        return None if row is None else str(row[0])

    def active_count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM technicians WHERE active = 1").fetchone()[0])

    def replace(self, listed: list[dict[str, Any]], *, etag: str | None) -> None:
        """Hold exactly ``listed`` (the county's answer), keeping the failure counters of
        the logins that stay; one transaction, so a crash leaves the old or the new list."""
        rows = [_row(item) for item in listed]
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO technicians (username, display_name, password_hash, active) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (username) DO UPDATE SET display_name = excluded.display_name, "
                "password_hash = excluded.password_hash, active = excluded.active", rows)
            names = [r[0] for r in rows]
            conn.execute(f"DELETE FROM technicians WHERE username NOT IN ({','.join('?' * len(names))})", names)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('etag', ?)", (etag or "",))
            conn.execute("COMMIT")

    def authenticate(self, username: str, password: str, *, now: float | None = None) -> Technician:
        """The technician with this password, or LoginRefused (the same words for an unknown
        login and a wrong password). A locked login is refused even with the right password."""
        at = time.time() if now is None else now
        with self._login_lock, self._connect() as conn:
            row = conn.execute("SELECT display_name, password_hash, active, failed_logins, locked_until "
                               "FROM technicians WHERE username = ?", (username,)).fetchone()
            if row is not None and row[4] is not None and row[4] > at:
                raise LoginRefused("login locked after too many wrong passwords", locked=True)
            usable = row is not None and bool(row[2]) and str(row[1]).startswith(ARGON2ID)
            try:
                _hasher.verify(row[1] if usable else _DUMMY_HASH, password)
            except (VerificationError, InvalidHashError):
                usable = False
            if not usable:
                if row is not None:
                    self._count_failure(conn, username, int(row[3]), at)
                raise LoginRefused("wrong username or password")
            conn.execute("UPDATE technicians SET failed_logins = 0, locked_until = NULL WHERE username = ?",
                         (username,))
            return Technician(username=username, display_name=str(row[0]) or username)

    def _count_failure(self, conn: sqlite3.Connection, username: str, failed: int, at: float) -> None:
        failed += 1
        locked_until = at + self.lockout_s if failed >= self.max_failures else None
        conn.execute("UPDATE technicians SET failed_logins = ?, locked_until = ? WHERE username = ?",
                     (0 if locked_until else failed, locked_until, username))
        if locked_until:
            log.warning("technician login locked for %.0f min after %d wrong passwords",
                        self.lockout_s / 60, failed)


def _row(item: dict[str, Any]) -> tuple[str, str, str, int]:
    username, active = item.get("username"), item.get("active")
    if not isinstance(username, str) or not username or not isinstance(active, bool):
        raise ValueError("the county's technician list has an entry without username or active")
    password_hash = str(item.get("password_hash") or "")
    if active and not password_hash.startswith(ARGON2ID):
        raise ValueError("the county's technician list has an active login without an Argon2id hash")
    return username, str(item.get("display_name") or username), password_hash if active else "", int(active)


def sync_once(client: httpx.Client, cache: TechnicianCache) -> bool:
    """Fetch the site's technicians into ``cache``; True if the list changed. Raises
    httpx errors or ValueError (a malformed answer), leaving the cache as it was."""
    etag = cache.etag()
    r = client.get(TECHNICIANS_PATH, headers={"If-None-Match": etag} if etag else {})
    if r.status_code == 304:
        return False
    r.raise_for_status()
    listed = r.json()
    if not isinstance(listed, list):
        raise ValueError("the county's technician list is not a list")
    cache.replace(listed, etag=r.headers.get("etag"))
    log.info("technician logins updated n=%d active=%d", len(listed), cache.active_count())
    return True


def run_sync(settings: EdgeSettings, cache: TechnicianCache, stop: threading.Event) -> None:
    """Fetch every ``edge_technicians_poll_s`` until ``stop``; a failure keeps the cache."""
    with county_client(settings, timeout=30.0) as client:
        while not stop.is_set():
            try:
                sync_once(client, cache)
                wait = settings.edge_technicians_poll_s
            except (httpx.HTTPError, ValueError, sqlite3.Error) as exc:
                log.warning("technician logins not updated (the cached ones still work): %s", type(exc).__name__)
                wait = min(settings.edge_technicians_poll_s, RETRY_AFTER_FAILURE_S)
            stop.wait(wait)


def start_sync(settings: EdgeSettings, cache: TechnicianCache, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_sync, args=(settings, cache, stop), name="technicians", daemon=True)
    thread.start()
    return thread

"""The township's orders at the edge: a copy of the county's, and the ones registered here.

The modality's worklist query (relay.edge.worklist) is answered from this cache only, so
it keeps working while the WAN is down. ``<spool>/orders.sqlite3`` (WAL,
``synchronous=FULL``) holds one row per order, keyed by (placer order number, issuer),
with the highest revision seen:

- ``origin = county``: the county's snapshot (GET /api/edges/orders, ETag / 304). A
  snapshot replaces all county rows at once; a row absent from it left the county's sync
  window and is dropped. A failed fetch leaves the cache as it is.
- ``origin = local``: registered on the technician's page (登记). The row and its upload
  (``uploads``) are written in one transaction before the page answers, so the worklist
  shows it at once; a loop POSTs it to the county until 200 (idempotent there), backing
  off while the county cannot be reached. When a snapshot contains it, the county's row
  replaces it; until then no snapshot drops it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from relay.config import EdgeSettings
from relay.dicom.orders import ORDERS_PATH, Order
from relay.edge.durable import create_durable_db, durable_db
from relay.edge.forward import retry_delay
from relay.edge.http import county_client

log = logging.getLogger(__name__)

CACHE_NAME = "orders.sqlite3"
UPLOAD_RETRY_MAX_S = 300.0
"""Longest wait between two uploads of one registered order the county did not take."""
RETRY_AFTER_FAILURE_S = 30.0
"""Longest wait before the next sync round after a failed one."""
LOCAL_KEEP = timedelta(days=7)
"""A registered order the county confirmed, but which is no longer in its snapshot, is kept
this long after its scheduled time (the county's own sync window into the past)."""
PERMANENT = frozenset({400, 403, 404, 409, 413, 422})
"""County answers to an upload that no retry changes."""
STOP_POLL_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    placer_order_number TEXT NOT NULL,
    placer_issuer TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    origin TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    body TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (placer_order_number, placer_issuer)
);
CREATE INDEX IF NOT EXISTS ix_orders_accession ON orders (accession_number);
CREATE TABLE IF NOT EXISTS uploads (
    placer_order_number TEXT NOT NULL,
    placer_issuer TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    confirmed_at TEXT,
    PRIMARY KEY (placer_order_number, placer_issuer)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Origin(enum.StrEnum):
    COUNTY = "county"
    """From the county's snapshot (HIS, FHIR, or a registration the county already has)."""
    LOCAL = "local"
    """Registered on this edge's page, not yet in a county snapshot."""


class UploadState(enum.StrEnum):
    """Where a registered order is on its way to the county."""

    PENDING = "pending"
    """Only at the edge (待上传)."""
    CONFIRMED = "confirmed"
    """The county has it (已上传)."""
    REFUSED = "refused"
    """The county refused it for good (a 4xx); shown on the page, not retried."""


@dataclass(frozen=True, slots=True)
class CachedOrder:
    order: Order
    origin: Origin
    upload: UploadState | None
    """For a registered order: its upload state (None for one only ever from the county)."""
    upload_error: str | None = None


class OrderCache:
    """The orders of this site on the edge's disk (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.path = create_durable_db(root, CACHE_NAME, _SCHEMA)
        self.wake = threading.Event()
        """Set when an order is registered, so that the upload loop goes at once."""

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return durable_db(self.path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def etag(self) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'etag'").fetchone()
        return str(row[0]) if row and row[0] else None

    def orders(self) -> list[CachedOrder]:
        """Every cached order with its upload state, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT o.body, o.origin, u.state, u.last_error FROM orders o LEFT JOIN uploads u "
                "ON u.placer_order_number = o.placer_order_number AND u.placer_issuer = o.placer_issuer "
                "ORDER BY o.scheduled_at, o.rowid").fetchall()
        return [CachedOrder(order=Order(**json.loads(body)), origin=Origin(origin),
                            upload=UploadState(state) if state else None, upload_error=error)
                for body, origin, state, error in rows]

    def accession_numbers(self) -> set[str]:
        with self._connect() as conn:
            return {str(r[0]) for r in conn.execute("SELECT accession_number FROM orders")}

    def register(self, build: Callable[[set[str]], Order]) -> Order:
        """Keep an order made on this edge's page and queue its upload, in one transaction
        (on disk when this returns). ``build`` gets the accession numbers held and makes the
        order; registrations are serialised, so two at once never get the same number."""
        with self._transaction() as conn:
            taken = {str(r[0]) for r in conn.execute("SELECT accession_number FROM orders")}
            order = build(taken)
            order.check()
            if self._put(conn, order, Origin.LOCAL, only_new=True):
                conn.execute("INSERT OR IGNORE INTO uploads (placer_order_number, placer_issuer, state) "
                             "VALUES (?, ?, ?)", (*order.key, UploadState.PENDING.value))
        self.wake.set()
        return order

    def _put(self, conn: sqlite3.Connection, order: Order, origin: Origin, *, only_new: bool = False) -> bool:
        """Insert or replace ``order`` unless a higher revision is held; True if written."""
        held = conn.execute("SELECT revision FROM orders WHERE placer_order_number = ? AND placer_issuer = ?",
                            order.key).fetchone()
        if held is not None and (only_new or int(held[0]) > order.revision):
            return False
        conn.execute(
            "INSERT OR REPLACE INTO orders (placer_order_number, placer_issuer, revision, status, origin, "
            "accession_number, scheduled_at, body, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*order.key, order.revision, order.status, origin.value, order.accession_number, order.scheduled_at,
             json.dumps(order.to_wire(), ensure_ascii=False), datetime.now(UTC).isoformat()))
        return True

    def replace_from_county(self, orders: list[Order], *, etag: str | None, now: datetime | None = None) -> int:
        """Hold the county's snapshot ``orders`` (see the module docstring) in one transaction;
        the number of county rows dropped."""
        keys = {o.key for o in orders}
        cutoff = ((now or datetime.now(UTC)) - LOCAL_KEEP).isoformat()
        with self._transaction() as conn:
            for order in orders:
                self._put(conn, order, Origin.COUNTY)
                conn.execute("UPDATE orders SET origin = ? WHERE placer_order_number = ? AND placer_issuer = ?",
                             (Origin.COUNTY.value, *order.key))
                conn.execute("UPDATE uploads SET state = ?, confirmed_at = ? WHERE placer_order_number = ? "
                             "AND placer_issuer = ? AND state = ?", (UploadState.CONFIRMED.value,
                             datetime.now(UTC).isoformat(), *order.key, UploadState.PENDING.value))
            held = conn.execute("SELECT o.placer_order_number, o.placer_issuer, o.origin, o.scheduled_at, u.state "
                                "FROM orders o LEFT JOIN uploads u ON u.placer_order_number = o.placer_order_number "
                                "AND u.placer_issuer = o.placer_issuer").fetchall()
            gone = [(number, issuer) for number, issuer, origin, at, state in held if (number, issuer) not in keys
                    and (origin == Origin.COUNTY.value
                         or (state == UploadState.CONFIRMED.value and at and _utc(at) < cutoff))]
            conn.executemany("DELETE FROM orders WHERE placer_order_number = ? AND placer_issuer = ?", gone)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('etag', ?)", (etag or "",))
        return len(gone)

    def due_uploads(self, *, now: float | None = None) -> list[Order]:
        at = time.time() if now is None else now
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT o.body FROM uploads u JOIN orders o ON o.placer_order_number = u.placer_order_number "
                "AND o.placer_issuer = u.placer_issuer WHERE u.state = ? AND u.next_at <= ? ORDER BY u.rowid",
                (UploadState.PENDING.value, at)).fetchall()
        return [Order(**json.loads(body)) for (body,) in rows]

    def settle_upload(self, key: tuple[str, str], state: UploadState, *, error: str | None = None,
                      answered: Order | None = None) -> None:
        """Record the county's final answer; its copy of the order (``answered``) replaces ours
        when its revision is not lower."""
        with self._transaction() as conn:
            conn.execute("UPDATE uploads SET state = ?, last_error = ?, confirmed_at = ?, attempts = attempts + 1 "
                         "WHERE placer_order_number = ? AND placer_issuer = ?",
                         (state.value, error, datetime.now(UTC).isoformat(), *key))
            if answered is not None and answered.key == key:
                self._put(conn, answered, Origin.LOCAL)

    def note_upload_failure(self, key: tuple[str, str], error: str, *, rng: random.Random,
                            first_delay_s: float) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT attempts FROM uploads WHERE placer_order_number = ? AND placer_issuer = ?",
                               key).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            delay = retry_delay(attempts=attempts, lo=first_delay_s, hi=max(first_delay_s, UPLOAD_RETRY_MAX_S),
                                rng=rng)
            conn.execute("UPDATE uploads SET attempts = ?, next_at = ?, last_error = ? "
                         "WHERE placer_order_number = ? AND placer_issuer = ?",
                         (attempts, time.time() + delay, error[:500], *key))

    def retry_uploads_now(self) -> None:
        """Make every pending upload due (the county answered again: no need to wait)."""
        with self._connect() as conn:
            conn.execute("UPDATE uploads SET next_at = 0 WHERE state = ?", (UploadState.PENDING.value,))


def _utc(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).isoformat()
    except ValueError:
        return ""


def local_date_time(order: Order, zone: ZoneInfo, now: datetime) -> tuple[str, str]:
    """The order's scheduled date and time (YYYYMMDD, HHMMSS) in the site's zone; an
    unscheduled order is for today, any time ("")."""
    if not order.scheduled_at:
        return now.astimezone(zone).strftime("%Y%m%d"), ""
    at = datetime.fromisoformat(order.scheduled_at).astimezone(zone)
    return at.strftime("%Y%m%d"), at.strftime("%H%M%S")


# --- with the county -------------------------------------------------------------------


def parse_snapshot(answer: object, *, site: str) -> list[Order]:
    """The orders of a GET answer; ValueError if it is malformed or names another site."""
    if not isinstance(answer, dict) or not isinstance(answer.get("orders"), list):
        raise ValueError("the county's order list is not {'orders': [...]}")
    orders = [Order.from_wire(item) for item in answer["orders"]]
    if any(o.site != site for o in orders):
        raise ValueError("the county's order list holds another site's order")
    return orders


def sync_once(client: httpx.Client, cache: OrderCache, *, site: str) -> bool:
    """Fetch the site's orders into ``cache``; True if the snapshot changed. Raises httpx
    errors or ValueError (a malformed answer), leaving the cache as it was."""
    etag = cache.etag()
    r = client.get(ORDERS_PATH, headers={"If-None-Match": etag} if etag else {})
    if r.status_code == 304:
        return False
    r.raise_for_status()
    orders = parse_snapshot(r.json(), site=site)
    dropped = cache.replace_from_county(orders, etag=r.headers.get("etag"))
    log.info("orders updated n=%d dropped=%d", len(orders), dropped)
    return True


def upload_due(client: httpx.Client, cache: OrderCache, *, rng: random.Random, first_delay_s: float) -> int:
    """POST every due registered order; the number the county confirmed. Stops at the first
    the county cannot take now (link down, 5xx), raising its error; the rest wait."""
    done = 0
    for order in cache.due_uploads():
        try:
            r = client.post(ORDERS_PATH, json=order.to_wire())
        except httpx.HTTPError as exc:
            cache.note_upload_failure(order.key, type(exc).__name__, rng=rng, first_delay_s=first_delay_s)
            raise
        if r.status_code in PERMANENT:
            cache.settle_upload(order.key, UploadState.REFUSED, error=_problem_text(r))
            log.warning("registered order %s refused by the county: %d", order.accession_number, r.status_code)
            continue
        if r.is_error:
            cache.note_upload_failure(order.key, f"county answered {r.status_code}", rng=rng,
                                      first_delay_s=first_delay_s)
            r.raise_for_status()
        answer = r.json()
        cache.settle_upload(order.key, UploadState.CONFIRMED, answered=Order.from_wire(answer["order"]))
        log.info("registered order uploaded accession=%s outcome=%s", order.accession_number, answer.get("outcome"))
        done += 1
    return done


def _problem_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"county answered {r.status_code}"
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    return f"county answered {r.status_code}: {str(detail)[:300]}"


def run_sync(settings: EdgeSettings, cache: OrderCache, stop: threading.Event) -> None:
    """Upload registered orders, then fetch the snapshot, every ``edge_order_sync_s`` (at
    once when an order is registered) until ``stop``; a failure keeps the cache."""
    rng = random.Random()
    failing = False
    with county_client(settings, timeout=30.0) as client:
        while not stop.is_set():
            cache.wake.clear()
            wait = settings.edge_order_sync_s
            try:
                upload_due(client, cache, rng=rng, first_delay_s=settings.edge_order_sync_s)
                sync_once(client, cache, site=settings.edge_site)
                if failing:  # the county answers again: registered orders need not wait out their backoff
                    cache.retry_uploads_now()
                    upload_due(client, cache, rng=rng, first_delay_s=settings.edge_order_sync_s)
                failing = False
            except (httpx.HTTPError, ValueError, KeyError, sqlite3.Error) as exc:
                log.warning("orders not synced (the worklist answers from the cache): %s", type(exc).__name__)
                wait, failing = min(wait, RETRY_AFTER_FAILURE_S), True
            _wait(stop, cache.wake, wait)


def _wait(stop: threading.Event, wake: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and not wake.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        wake.wait(min(STOP_POLL_S, left))


def start_sync(settings: EdgeSettings, cache: OrderCache, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_sync, args=(settings, cache, stop), name="orders", daemon=True)
    thread.start()
    return thread

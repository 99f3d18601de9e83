"""The edge forwarder: upload spooled instances to the county, most urgent first.

One thread loops over ``Spool.next_batch`` and POSTs each instance per the contract
in ``relay.dicom.wire``. An instance is marked sent only when the county answers 200
with a JSON outcome, i.e. it holds the bytes durably. Every other answer (401, 403,
413, 422, 5xx, no answer) is recorded on the journal row and retried with capped
exponential backoff and jitter -- forever: an acknowledged instance is never dropped.

Failures that concern the link rather than one instance (network, 5xx, credentials)
also pause the whole forwarder, so a county outage costs one request per backoff
step instead of one per pending instance.

The spooled file is kept after it is sent; deleting sent files (retention) is a
later issue. ``upload_instance`` holds the per-request logic on its own so that
batching and compression can replace it without touching the loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from relay.config import Settings
from relay.dicom import wire
from relay.dicom.vocab import IngestOutcome
from relay.edge.spool import Spool, SpoolEntry, utc_now

log = logging.getLogger(__name__)

BATCH_SIZE = 16
"""Due instances fetched per journal query. Small, so that a STAT instance stored
while a routine study is being sent overtakes it within at most this many uploads."""
IDLE_POLL_S = 0.5
"""Seconds the idle forwarder sleeps between journal checks; a new store wakes it
at once, so this only bounds how late a retry that has become due is noticed."""
PER_INSTANCE_STATUSES = frozenset({413, 422})
"""Answers about one instance (too large, unusable or corrupted on the way): retried
with backoff while the others keep flowing. Any other failure pauses the link."""
ALARM_STATUSES = frozenset({401, 403, 413, 422})
"""Answers that need a person (credential, size limit, corruption): logged as errors
from the first attempt. Transient failures become errors after ``ALARM_AFTER``."""
ALARM_AFTER = 5
"""Consecutive failed attempts after which a transient failure is logged as an error."""
MAX_DETAIL_CHARS = 200
"""How much of a county problem document is kept in the journal and the log."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What one upload attempt achieved."""

    outcome: IngestOutcome | None
    """Set only when the county holds the bytes durably (200 with an outcome)."""
    error: str | None = None
    """Why it failed, for the journal and the log: identifiers and statuses only."""
    link_down: bool = False
    """The failure concerns every instance (network, county down, credential)."""
    status: int | None = None
    """HTTP status of the answer, None when there was none."""


def retry_delay(*, attempts: int, lo: float, hi: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure: doubling from
    ``lo``, capped at ``hi``, with "equal jitter" (half fixed, half random) so that
    twenty edges recovering from one county outage do not retry in lockstep."""
    ceiling = min(hi, lo * 2.0 ** max(0, min(attempts - 1, 32)))
    return max(lo, ceiling / 2 + rng.uniform(0, ceiling / 2))


def upload_headers(*, entry: SpoolEntry, token: str | None) -> dict[str, str]:
    """The request headers of the wire contract for one spooled instance."""
    headers = {
        "Content-Type": wire.DICOM_MEDIA_TYPE,
        wire.HEADER_SHA256: entry.sha256,
        wire.HEADER_PRIORITY: entry.priority.value,
        wire.HEADER_CALLING_AE: entry.calling_ae,
        wire.HEADER_RECEIVED_AT: entry.received_at,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _problem(response: httpx.Response) -> str:
    """Short, log-safe description of a refusal: status plus the problem title/detail."""
    text = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            text = " ".join(str(body[k]) for k in ("title", "detail") if body.get(k))
    except ValueError:
        pass
    return f"HTTP {response.status_code} {text}".strip()[:MAX_DETAIL_CHARS]


def _accepted(response: httpx.Response, entry: SpoolEntry) -> UploadResult:
    try:
        body = response.json()
        outcome = IngestOutcome(body["outcome"])
    except (ValueError, KeyError, TypeError):
        return UploadResult(None, "HTTP 200 without a JSON outcome", link_down=True, status=200)
    if body.get("sha256", entry.sha256) != entry.sha256:
        return UploadResult(None, "HTTP 200 for another SHA-256", link_down=True, status=200)
    return UploadResult(outcome, status=200)


def upload_instance(*, client: httpx.Client, entry: SpoolEntry, token: str | None) -> UploadResult:
    """POST one spooled instance to the county and classify the answer. Never raises
    for network or file errors: they come back as a failed ``UploadResult``."""
    try:
        with entry.path.open("rb") as body:  # streamed; Content-Length from the file
            response = client.post(
                wire.INGEST_PATH, content=body, headers=upload_headers(entry=entry, token=token)
            )
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
        return UploadResult(None, error, link_down=True)
    except OSError as exc:
        return UploadResult(None, f"spool file unreadable: {exc.strerror or exc}")
    status = response.status_code
    if status == 200:
        return _accepted(response, entry)
    return UploadResult(None, _problem(response),
                        link_down=status not in PER_INSTANCE_STATUSES, status=status)


class Forwarder:
    """Sends what the spool holds, forever, in priority order. Run ``run(stop)`` in a
    thread; it returns soon after ``stop`` is set."""

    def __init__(self, *, spool: Spool, settings: Settings,
                 client: httpx.Client | None = None, rng: random.Random | None = None) -> None:
        self.spool = spool
        self.settings = settings
        self.client = client or httpx.Client(
            base_url=settings.county_url, timeout=settings.forward_timeout
        )
        self.rng = rng or random.Random()
        self._link_failures = 0
        self._paused_until = 0.0  # time.monotonic() before which nothing is sent

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop``; survives any error of its own (logged, then a pause)."""
        if not self.settings.edge_site_token:
            log.error("no edge_site_token configured: the county will refuse uploads")
        while not stop.is_set():
            try:
                self._step(stop)
            except Exception:
                log.exception("forwarder error; pausing")
                stop.wait(self.settings.forward_retry_min)
        self.client.close()

    def _step(self, stop: threading.Event) -> None:
        pause = self._paused_until - time.monotonic()
        if pause > 0:
            stop.wait(pause)
            return
        batch = self.spool.next_batch(BATCH_SIZE)
        if not batch:
            self.spool.wait_for_new(IDLE_POLL_S)
            return
        for entry in batch:
            if stop.is_set() or self.forward_entry(entry).link_down:
                return

    def forward_entry(self, entry: SpoolEntry) -> UploadResult:
        """Upload one instance and record the result in the journal and the log."""
        started = time.perf_counter()
        result = upload_instance(client=self.client, entry=entry,
                                 token=self.settings.edge_site_token)
        ms = (time.perf_counter() - started) * 1000
        if result.outcome is not None:
            self._link_failures = 0
            self.spool.mark_sent(entry.entry_id, outcome=result.outcome)
            log.info("forwarded sop=%s bytes=%d ms=%.1f priority=%s outcome=%s",
                     entry.sop_uid, entry.size, ms, entry.priority.value, result.outcome.value)
        else:
            self._record_failure(entry, result, ms)
        return result

    def _record_failure(self, entry: SpoolEntry, result: UploadResult, ms: float) -> None:
        if result.link_down:
            self._link_failures += 1
        attempts = max(entry.attempts + 1, self._link_failures)
        delay = retry_delay(attempts=attempts, lo=self.settings.forward_retry_min,
                            hi=self.settings.forward_retry_max, rng=self.rng)
        error = result.error or "unknown error"
        self.spool.mark_failed(entry.entry_id, error=error,
                               next_attempt_at=utc_now() + timedelta(seconds=delay))
        if result.link_down:
            self._paused_until = time.monotonic() + delay
        alarm = result.status in ALARM_STATUSES or attempts >= ALARM_AFTER
        level = logging.ERROR if alarm else logging.WARNING
        log.log(level, "forward failed sop=%s bytes=%d ms=%.1f attempt=%d retry_in=%.1fs: %s",
                entry.sop_uid, entry.size, ms, attempts, delay, error)


def start_forwarder(*, spool: Spool, settings: Settings, stop: threading.Event,
                    **forwarder_args: Any) -> threading.Thread:
    """Run a ``Forwarder`` in a daemon thread named ``relay-forwarder``."""
    forwarder = Forwarder(spool=spool, settings=settings, **forwarder_args)
    thread = threading.Thread(target=forwarder.run, args=(stop,), name="relay-forwarder",
                              daemon=True)
    thread.start()
    return thread

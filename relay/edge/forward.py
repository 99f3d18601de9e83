"""The edge forwarder: bundle uploads to the county that fill the pipe and survive cuts.

Spooled instances of ready studies are packed into bundles (``relay.edge.bundle_outbox``),
one priority each, most urgent then oldest first, and uploaded in chunks by
``forward_streams`` threads (create, PATCH from the county's offset, complete; the HTTP
steps are ``relay.edge.bundle_client``'s, the offsets ``relay.edge.bundle_progress``'s).
A stream yields its bundle between chunks to something more urgent; every chunk byte
passes one site-wide ``TokenBucket``; completions run on a completer thread. Instances
are marked sent only on a 200 to complete that lists their outcomes; a 422 there drops
the bundle to be packed again; every other failure is retried with capped backoff,
forever. The details and why: docs/design/edge-bundles.md.

Log lines carry bundle ids, byte counts and timings; never patient data.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from relay.config import EdgeSettings
from relay.dicom.vocab import BundleState, IngestOutcome
from relay.edge.bundle_client import BundleClient, Interrupted, Progress, Rejected, UploadError
from relay.edge.bundle_progress import BundleProgress
from relay.edge.http import county_client
from relay.edge.bundle_outbox import Bundle, BundleOutbox
from relay.edge.clock import now_utc
from relay.edge.ratelimit import RoutineWindow, TokenBucket, may_send
from relay.edge.journal import SpoolEntry
from relay.edge.spool import Spool

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5
"""Seconds an idle stream sleeps between spool checks; a new store wakes it at once,
so this only bounds how late a retry that has become due is noticed."""
ALARM_STATUSES = frozenset({401, 403, 413, 422})
"""Answers that need a person (credential, size limit, corruption): logged as errors at
once. Transient failures become errors after ``ALARM_AFTER`` in a row."""
ALARM_AFTER = 5
"""Consecutive failures after which a transient failure is logged as an error."""
def retry_delay(*, attempts: int, lo: float, hi: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure: doubling from
    ``lo``, capped at ``hi``, with "equal jitter" (half fixed, half random) so that
    twenty edges recovering from one county outage do not retry in lockstep."""
    ceiling = min(hi, lo * 2.0 ** max(0, min(attempts - 1, 32)))
    return max(lo, ceiling / 2 + rng.uniform(0, ceiling / 2))


def pack(entries: list[SpoolEntry], *, max_bytes: int, max_count: int) -> list[SpoolEntry]:
    """The head of ``entries`` (already in send order) that goes into one bundle: the
    first entry's priority only, within the byte and count caps (at least one entry)."""
    chosen: list[SpoolEntry] = []
    total = 0
    for entry in entries:
        if entry.priority != entries[0].priority or len(chosen) >= max_count:
            break
        if chosen and total + entry.size > max_bytes:
            break
        chosen.append(entry)
        total += entry.size
    return chosen


@dataclass
class _Shared:
    """State the streams share, under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    claimed: set[str] = field(default_factory=set)
    not_before: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    link_failures: int = 0
    rejections: int = 0
    paused_until: float = 0.0


class Forwarder:
    """Sends what the spool holds, forever, in priority order, over ``forward_streams``
    streams. Run ``run(stop)`` in a thread; it returns soon after ``stop`` is set."""

    def __init__(self, *, spool: Spool, settings: EdgeSettings, outbox: BundleOutbox | None = None,
                 bucket: TokenBucket | None = None, rng: random.Random | None = None) -> None:
        self.spool, self.settings = spool, settings
        self._owns_outbox = outbox is None
        self.outbox = outbox or BundleOutbox(spool.root)
        self.progress = BundleProgress(self.outbox)
        self.bucket = bucket or TokenBucket(settings.forward_rate_limit_bps)
        self.window = RoutineWindow.parse(settings.forward_routine_window,
                                          zone=settings.timezone)
        self.rng = rng or random.Random()
        self._pick_lock = threading.Lock()  # one stream packs at a time
        self._s = _Shared()
        # Completion (the county verifies and ingests, ~1-2 s for 32 MiB) runs beside the
        # streams, so a stream starts its next bundle at once and the link stays busy.
        self._completing = threading.Semaphore(settings.forward_streams)
        self._completers = ThreadPoolExecutor(settings.forward_streams,
                                              thread_name_prefix="relay-complete")
        self._completer_clients = threading.local()

    # --- loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run the streams until ``stop``; each survives any error of its own."""
        if not self.settings.edge_site_token:
            log.error("no edge_site_token configured: the county will refuse uploads")
        streams = [threading.Thread(target=self._stream, args=(stop,), daemon=True,
                                    name=f"relay-forward-{n}")
                   for n in range(self.settings.forward_streams)]
        for thread in streams:
            thread.start()
        for thread in streams:
            thread.join()
        self._completers.shutdown(wait=True)
        if self._owns_outbox:
            self.outbox.close()

    def new_client(self, stop: threading.Event) -> BundleClient:
        """A protocol client with its own HTTP connection (one per stream), from the
        edge's one client factory, so the county's private CA applies to uploads too."""
        http = county_client(self.settings)
        return BundleClient(client=http, token=self.settings.edge_site_token,
                            bucket=self.bucket, stop=stop)

    def _stream(self, stop: threading.Event) -> None:
        client = self.new_client(stop)
        try:
            while not stop.is_set():
                try:
                    self.step(client, stop)
                except Exception:
                    log.exception("forwarder error; pausing")
                    stop.wait(self.settings.forward_retry_min)
        finally:
            client.client.close()

    def step(self, client: BundleClient, stop: threading.Event) -> None:
        """One unit of work: wait out a pause, or upload (part of) the best bundle."""
        pause = self._s.paused_until - time.monotonic()
        if pause > 0:
            stop.wait(pause)
            return
        bundle = self.claim_next()
        if bundle is None:
            self.spool.wait_for_new(IDLE_POLL_S)
            return
        handed_off = False
        try:
            handed_off = self.upload(bundle, client=client, stop=stop)
        finally:
            if not handed_off:
                self._release(bundle)

    def _release(self, bundle: Bundle) -> None:
        with self._s.lock:
            self._s.claimed.discard(bundle.bundle_id)

    # --- choosing what to send ----------------------------------------------------------
    def claim_next(self) -> Bundle | None:
        """The most urgent sendable work, claimed for the calling stream: a waiting
        bundle, or a new one packed from the spool if its instances are more urgent."""
        with self._pick_lock:
            waiting = self._best_waiting()
            entries = self._unpacked(limit=self.settings.forward_bundle_max_instances)
            bundle = waiting
            if entries and (waiting is None or entries[0].priority.rank < waiting.priority.rank):
                bundle = self._build(entries) or waiting
            if bundle is not None:
                with self._s.lock:
                    self._s.claimed.add(bundle.bundle_id)
            return bundle

    def _best_waiting(self) -> Bundle | None:
        now, mono = now_utc(), time.monotonic()
        with self._s.lock:
            busy = set(self._s.claimed)
            not_before = dict(self._s.not_before)
        for bundle in self.outbox.bundles():
            if bundle.bundle_id in busy or not_before.get(bundle.bundle_id, 0) > mono:
                continue
            if may_send(self.window, priority=bundle.priority, moment=now):
                return bundle
        return None

    def _unpacked(self, *, limit: int) -> list[SpoolEntry]:
        """Due spool entries not yet in a bundle and allowed now, in send order."""
        reserved = self.outbox.reserved_ids()
        now = now_utc()
        return [e for e in self.spool.next_batch(len(reserved) + limit)
                if e.entry_id not in reserved
                and may_send(self.window, priority=e.priority, moment=now)][:limit]

    def _build(self, entries: list[SpoolEntry]) -> Bundle | None:
        chosen = pack(entries, max_bytes=self._bundle_cap(entries),
                      max_count=self.settings.forward_bundle_max_instances)
        started = time.perf_counter()
        bundle, unusable = self.outbox.build(chosen, priority=chosen[0].priority,
                                             encoding=self.settings.forward_encoding)
        for bad in unusable:
            self._instance_unusable(bad.entry, bad.reason)
        if bundle is not None:
            log.info("bundle packed id=%s priority=%s instances=%d raw_bytes=%d bytes=%d "
                     "encoding=%s ms=%.1f", bundle.bundle_id, bundle.priority.value,
                     len(bundle.items), bundle.raw_bytes, bundle.size, bundle.encoding,
                     (time.perf_counter() - started) * 1000)
        return bundle

    def _bundle_cap(self, entries: list[SpoolEntry]) -> int:
        """Raw bytes for the next bundle: the configured cap, but when little is left
        a share of it per stream, so the tail of a study uses every stream instead of
        one stop-and-wait stream (at least one chunk's worth, so bundles stay useful)."""
        s = self.settings
        same = sum(e.size for e in entries if e.priority == entries[0].priority)
        share = -(-same // s.forward_streams)
        return min(s.forward_bundle_max_bytes, max(s.forward_chunk_bytes, share))

    def _instance_unusable(self, entry: SpoolEntry, reason: str) -> None:
        delay = retry_delay(attempts=entry.attempts + 1, lo=self.settings.forward_retry_min,
                            hi=self.settings.forward_retry_max, rng=self.rng)
        self.spool.mark_failed(entry.entry_id, error=f"spool file unusable: {reason}",
                               next_attempt_at=now_utc() + timedelta(seconds=delay))
        log.error("instance not packed entry=%d sop=%s retry_in=%.1fs: %s",
                  entry.entry_id, entry.sop_uid, delay, reason)

    def more_urgent_waiting(self, bundle: Bundle) -> bool:
        """Whether a stream sending ``bundle`` should hand the link to other work."""
        rank = bundle.priority.rank
        if rank == 0:
            return False
        waiting = self._best_waiting()
        if waiting is not None and waiting.priority.rank < rank:
            return True
        head = self._unpacked(limit=1)
        return bool(head) and head[0].priority.rank < rank

    # --- uploading ------------------------------------------------------------------------
    def upload(self, bundle: Bundle, *, client: BundleClient, stop: threading.Event) -> bool:
        """Take ``bundle`` as far as possible: all bytes sent (then its completion is
        handed to a completer and True is returned: the claim is released there), a
        yield, or a failure (recorded, with backoff). Never raises for the county's or
        the link's faults."""
        with self._s.lock:
            self._s.started.setdefault(bundle.bundle_id, time.perf_counter())
        try:
            progress = self._resume_point(bundle, client)
            if progress.state == BundleState.COMPLETE and progress.results is not None:
                self._finish(bundle, progress.results, client)
            elif self._send_chunks(bundle, client, stop, progress.received):
                self._completing.acquire()  # bounded: at most forward_streams at once
                self._completers.submit(self._complete, bundle, stop)
                return True
        except Rejected as exc:
            self._rebuild(bundle, exc)
        except UploadError as exc:
            self._failed(bundle, exc, client)
        except Interrupted:
            log.info("bundle interrupted id=%s (stopping; resumes on next start)",
                     bundle.bundle_id)
        return False

    def _complete(self, bundle: Bundle, stop: threading.Event) -> None:
        """Ask the county to complete ``bundle`` and record the outcome (completer thread)."""
        client: BundleClient | None = getattr(self._completer_clients, "client", None)
        if client is None:
            client = self._completer_clients.client = self.new_client(stop)
        try:
            self._finish(bundle, client.complete(bundle), client)
        except Rejected as exc:
            self._rebuild(bundle, exc)
        except UploadError as exc:
            self._failed(bundle, exc, client)
        except Exception:
            log.exception("completion error id=%s; it is retried", bundle.bundle_id)
        finally:
            self._release(bundle)
            self._completing.release()

    def _resume_point(self, bundle: Bundle, client: BundleClient) -> Progress:
        offset, announced = self.progress.resume_point(bundle.bundle_id)
        if offset is not None:
            return Progress(received=offset, state=BundleState.OPEN.value, results=None)
        progress = client.progress(bundle) if announced else client.create(bundle)
        self.progress.announced(bundle.bundle_id)
        log.info("bundle %s id=%s received=%d of bytes=%d state=%s",
                 "resumed" if announced else "announced", bundle.bundle_id,
                 progress.received, bundle.size, progress.state)
        return progress

    def _send_chunks(self, bundle: Bundle, client: BundleClient, stop: threading.Event,
                     offset: int) -> bool:
        """PATCH chunks from ``offset`` to the end; False if the stream yielded first."""
        while offset < bundle.size:
            if stop.is_set() or self._must_yield(bundle, offset):
                return False
            length = min(self.settings.forward_chunk_bytes, bundle.size - offset)
            started = time.perf_counter()
            held = client.send_chunk(bundle, offset=offset, length=length)
            self._link_ok(client)
            self.progress.confirmed(bundle.bundle_id, held)
            log.info("chunk sent id=%s offset=%d bytes=%d held=%d of %d ms=%.1f",
                     bundle.bundle_id, offset, length, held, bundle.size,
                     (time.perf_counter() - started) * 1000)
            offset = held
        return True

    def _must_yield(self, bundle: Bundle, offset: int) -> bool:
        allowed = may_send(self.window, priority=bundle.priority, moment=now_utc())
        if allowed and not self.more_urgent_waiting(bundle):
            return False
        log.info("bundle yielded id=%s priority=%s at offset=%d of %d (%s)", bundle.bundle_id,
                 bundle.priority.value, offset, bundle.size,
                 "more urgent work waiting" if allowed else "outside the routine window")
        return True

    # --- outcomes ---------------------------------------------------------------------
    def _finish(self, bundle: Bundle, results: list[dict[str, Any]],
                client: BundleClient) -> None:
        """Mark the instances the county vouched for as sent (journal first), then drop
        the bundle; instances missing from ``results`` become packable again."""
        by_key = {(i.sop_uid, i.sha256): i.entry_id for i in bundle.items}
        outcomes: list[tuple[int, IngestOutcome]] = []
        for result in results:
            try:
                key = (str(result["sop_uid"]), str(result["sha256"]))
                outcome = IngestOutcome(result["outcome"])
            except (KeyError, TypeError, ValueError):
                continue
            if key in by_key:
                outcomes.append((by_key[key], outcome))
        self.spool.mark_sent_many(outcomes)
        self.outbox.drop(bundle.bundle_id)
        self._link_ok(client)
        with self._s.lock:
            self._s.rejections = 0
            started = self._forget(bundle.bundle_id)
        counts = {o.value: sum(1 for _, x in outcomes if x == o) for o in IngestOutcome}
        level = logging.INFO if len(outcomes) == len(bundle.items) else logging.ERROR
        log.log(level, "bundle done id=%s priority=%s instances=%d/%d stored=%d duplicate=%d "
                "quarantined=%d raw_bytes=%d bytes=%d ms=%.1f", bundle.bundle_id,
                bundle.priority.value, len(outcomes), len(bundle.items), counts["stored"],
                counts["duplicate"], counts["quarantined"], bundle.raw_bytes, bundle.size,
                (time.perf_counter() - started) * 1000)

    def _forget(self, bundle_id: str) -> float:
        """Drop in-memory state of a finished or discarded bundle; its start time."""
        self.progress.forget(bundle_id)
        self._s.not_before.pop(bundle_id, None)
        return self._s.started.pop(bundle_id, time.perf_counter())

    def _rebuild(self, bundle: Bundle, exc: UploadError) -> None:
        """The county refused the bytes: drop the bundle; its instances are packed again
        from the spool after a backoff (so a persistent fault does not spin)."""
        with self._s.lock:
            self._s.rejections += 1
            attempts = self._s.rejections
            self._forget(bundle.bundle_id)
        delay = self._delay(attempts)
        self.outbox.drop(bundle.bundle_id)
        self.spool.mark_failed_many([i.entry_id for i in bundle.items], error=str(exc),
                                    next_attempt_at=now_utc() + timedelta(seconds=delay))
        log.error("bundle rejected id=%s instances=%d bytes=%d attempt=%d repack_in=%.1fs: %s",
                  bundle.bundle_id, len(bundle.items), bundle.size, attempts, delay, exc)

    def _failed(self, bundle: Bundle, exc: UploadError, client: BundleClient) -> None:
        """Record a failed step; the bundle stays in the outbox and is resumed later."""
        client.failures += 1
        self.progress.doubt(bundle.bundle_id, unknown=exc.unknown)  # ask the county again
        with self._s.lock:
            self._s.link_failures += 1
            attempts = max(client.failures, self._s.link_failures)
        # A stream's first failure after a success is retried at once: a cut link is
        # usually back by the time the new connection is up. Later ones back off, and
        # a link-wide failure then pauses every stream.
        delay = 0.0 if client.failures == 1 else self._delay(client.failures - 1)
        with self._s.lock:
            until = time.monotonic() + delay
            if exc.link_down:
                self._s.paused_until = max(self._s.paused_until, until)
            else:
                self._s.not_before[bundle.bundle_id] = until
        self.spool.mark_failed_many([i.entry_id for i in bundle.items], error=str(exc),
                                    next_attempt_at=now_utc())
        alarm = exc.status in ALARM_STATUSES or attempts >= ALARM_AFTER
        log.log(logging.ERROR if alarm else logging.WARNING,
                "bundle failed id=%s bytes=%d attempt=%d retry_in=%.1fs: %s",
                bundle.bundle_id, bundle.size, attempts, delay, exc)

    def _delay(self, attempts: int) -> float:
        return retry_delay(attempts=attempts, lo=self.settings.forward_retry_min,
                           hi=self.settings.forward_retry_max, rng=self.rng)

    def _link_ok(self, client: BundleClient) -> None:
        client.failures = 0
        with self._s.lock:
            self._s.link_failures = 0


def start_forwarder(*, spool: Spool, settings: EdgeSettings, stop: threading.Event,
                    **forwarder_args: Any) -> threading.Thread:
    """Run a ``Forwarder`` in a daemon thread named ``relay-forwarder``."""
    forwarder = Forwarder(spool=spool, settings=settings, **forwarder_args)
    thread = threading.Thread(target=forwarder.run, args=(stop,), name="relay-forwarder",
                              daemon=True)
    thread.start()
    return thread

"""Traffic shaping of the edge's uploads: a site-wide byte rate cap and a routine window.

A township shares one line between the relay and everything else (HIS, video
consults). ``TokenBucket`` caps the relay's upload rate across all its streams;
``RoutineWindow`` keeps routine bundles to the hours the site allows (e.g. night),
while STAT and urgent always go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time as clock_time
from zoneinfo import ZoneInfo

from relay.dicom.vocab import Priority

BURST_S = 0.25
"""Seconds of traffic the bucket may hold (default 0.25 s at the cap): enough that the
token wait is not a per-block stall, small enough that a burst does not fill the
township router's queue."""
MIN_BURST_BYTES = 64 * 1024
"""Smallest bucket depth in bytes (64 KiB): one upload block always fits."""


class TokenBucket:
    """A token bucket in bytes, shared by every upload stream of the site (thread-safe).

    ``rate_bps`` is in bits per second; None means unlimited (``take`` never waits but
    still counts). ``taken`` is the total accounted, for tests and the health report.
    """

    def __init__(self, rate_bps: float | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bytes_per_s = rate_bps / 8.0 if rate_bps else None
        self.capacity = max(MIN_BURST_BYTES, int((self.bytes_per_s or 0) * BURST_S))
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(self.capacity)
        self._stamp = clock()
        self.taken = 0
        self.waited_s = 0.0

    def take(self, nbytes: int) -> None:
        """Block until ``nbytes`` may be sent; a request above the depth goes in pieces."""
        while nbytes > 0:
            piece = min(nbytes, self.capacity)
            self._take_piece(piece)
            nbytes -= piece

    def _take_piece(self, nbytes: int) -> None:
        with self._lock:
            self.taken += nbytes
            if self.bytes_per_s is None:
                return
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.bytes_per_s)
            self._stamp = now
            self._tokens -= nbytes  # may go negative: later takers wait for the debt
            wait = -self._tokens / self.bytes_per_s if self._tokens < 0 else 0.0
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True, slots=True)
class RoutineWindow:
    """Local hours in which routine uploads may run; STAT and urgent ignore it."""

    start: clock_time
    end: clock_time
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str | None, *, zone: str) -> "RoutineWindow | None":
        """'22:00-06:00' in ``zone`` (may wrap midnight); None when ``text`` is empty."""
        if not text:
            return None
        start, end = (clock_time.fromisoformat(part.strip()) for part in text.split("-"))
        return cls(start=start, end=end, zone=ZoneInfo(zone))

    def is_open(self, moment: datetime) -> bool:
        """Whether a routine upload may run at ``moment`` (an aware datetime)."""
        now = moment.astimezone(self.zone).time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


def may_send(window: RoutineWindow | None, *, priority: Priority, moment: datetime) -> bool:
    """STAT and urgent always go; routine only inside the window, if there is one."""
    return priority != Priority.ROUTINE or window is None or window.is_open(moment)

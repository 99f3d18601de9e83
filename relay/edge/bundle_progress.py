"""How far each bundle's upload has got, kept by one owner.

``BundleProgress`` is the only writer of a bundle's progress, which has three uses:

* the offset the county confirmed *during this run*, trusted for resuming until a
  failure casts doubt on it (then the county is asked again: a cut may have lost
  the last chunk's answer, never its bytes);
* whether the bundle was announced during this run (then a resume asks for progress,
  otherwise it announces, which is idempotent);
* the same confirmed offset, durably, in the outbox (``BundleOutbox.note_progress``): only
  for the technician's "sending n%", never for resuming, since after a restart the
  county's answer is the truth.

The spool journal is not bundle progress: it records per *instance* whether the
county holds it (``sent``), which only a completed bundle changes.
"""

from __future__ import annotations

import threading

from relay.edge.bundle_outbox import BundleOutbox


class BundleProgress:
    """Thread-safe; shared by every upload stream of one forwarder."""

    def __init__(self, outbox: BundleOutbox) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._announced: set[str] = set()
        self._confirmed: dict[str, int] = {}

    def resume_point(self, bundle_id: str) -> tuple[int | None, bool]:
        """(the offset to resume from without asking the county, or None; whether the
        bundle was announced during this run)."""
        with self._lock:
            return self._confirmed.get(bundle_id), bundle_id in self._announced

    def announced(self, bundle_id: str) -> None:
        """The county answered the announcement (or a progress request) for it."""
        with self._lock:
            self._announced.add(bundle_id)

    def confirmed(self, bundle_id: str, offset: int) -> None:
        """The county holds ``offset`` bytes of the bundle (its answer to a chunk)."""
        with self._lock:
            self._confirmed[bundle_id] = offset
        self._outbox.note_progress(bundle_id, offset)

    def doubt(self, bundle_id: str, *, unknown: bool = False) -> None:
        """A step failed: ask the county before resuming; ``unknown``: it does not know
        the bundle id, so announce it again."""
        with self._lock:
            self._confirmed.pop(bundle_id, None)
            if unknown:
                self._announced.discard(bundle_id)

    def forget(self, bundle_id: str) -> None:
        """The bundle is done or dropped (its outbox row goes with ``BundleOutbox.drop``)."""
        with self._lock:
            self._confirmed.pop(bundle_id, None)
            self._announced.discard(bundle_id)

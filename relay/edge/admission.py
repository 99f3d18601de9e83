"""What the edge lets in: which modalities may associate, and whether there is room.

* ``AllowList``: calling AE titles allowed to associate, each optionally pinned to a
  source address (``Settings.edge_allowed_aes``). AE titles are not authentication:
  any host on the township LAN can claim any title; the list only stops misdirected
  sends and makes the sender visible. Empty means accept anyone (logged loudly).
* ``DiskGuard``: refuse C-STORE with 0xA700 *before* writing when the spool's file
  system is below its free-space watermark, so a full disk never leaves a partial
  file and the journal always has room to commit.
* ``Alarms``: the conditions the technician must see now (status page), keyed so a
  repeated condition is one alarm, cleared when it goes away.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.edge.clock import now_utc

log = logging.getLogger(__name__)

ALARM_DISK = "disk"
"""Alarm key: the spool's disk is below its watermark or full."""


@dataclass(frozen=True, slots=True)
class AllowedAe:
    """One entry of the allow-list: an AE title, and the only address it may use."""

    ae_title: str
    address: str | None = None


class AllowList:
    """Calling AE titles (and addresses) allowed to associate with the edge."""

    def __init__(self, entries: tuple[AllowedAe, ...]) -> None:
        self.entries = entries
        self._by_title: dict[str, list[AllowedAe]] = {}
        for entry in entries:
            self._by_title.setdefault(entry.ae_title, []).append(entry)

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        """Parse ``'CT01@192.168.1.20,DR01'``; raise ValueError on an AE title over 16
        characters (it could never match)."""
        entries = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            title, _, address = part.partition("@")
            title = title.strip()
            if not title or len(title) > 16:
                raise ValueError(f"edge_allowed_aes: bad AE title in {part!r}")
            entries.append(AllowedAe(ae_title=title, address=address.strip() or None))
        return cls(tuple(entries))

    @property
    def accepts_any(self) -> bool:
        return not self.entries

    def refusal(self, *, calling_ae: str, address: str) -> str | None:
        """Why this association is refused, or None if it is allowed."""
        if self.accepts_any:
            return None
        entries = self._by_title.get(calling_ae.strip())
        if not entries:
            return "calling AE title not in the allow-list"
        if any(e.address is None or e.address == address for e in entries):
            return None
        return "calling AE title not allowed from this address"


@dataclass(frozen=True, slots=True)
class DiskState:
    """Free space of the spool's file system."""

    free_bytes: int
    total_bytes: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def disk_state(path: Path) -> DiskState:
    """Free (for an unprivileged writer) and total bytes of the file system of ``path``."""
    st = os.statvfs(path)
    return DiskState(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)


class Alarms:
    """Active alarms, thread-safe; the status page lists them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[str, datetime]] = {}

    def raise_alarm(self, key: str, message: str) -> None:
        """Set alarm ``key``; logged (at ERROR) only when it becomes active."""
        with self._lock:
            new = key not in self._active
            since = self._active[key][1] if not new else now_utc()
            self._active[key] = (message, since)
        if new:
            log.error("ALARM %s: %s", key, message)

    def clear(self, key: str) -> None:
        with self._lock:
            gone = self._active.pop(key, None)
        if gone is not None:
            log.warning("alarm %s cleared", key)

    def active(self) -> dict[str, tuple[str, datetime]]:
        """Alarm key -> (message, since)."""
        with self._lock:
            return dict(self._active)


class DiskGuard:
    """Decides, before a C-STORE writes anything, whether the spool has room."""

    def __init__(self, *, root: Path, min_free_bytes: int, min_free_percent: float,
                 alarms: Alarms) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.alarms = alarms

    def refusal(self, incoming_bytes: int = 0) -> str | None:
        """Why a store of ``incoming_bytes`` must be refused, or None (clears the alarm).
        With both watermarks 0 nothing is checked: only a real ENOSPC refuses."""
        if not self.min_free_bytes and not self.min_free_percent:
            return None
        state = disk_state(self.root)
        free_after = state.free_bytes - incoming_bytes
        reason = None
        if free_after < self.min_free_bytes:
            reason = (f"spool disk below watermark: {state.free_bytes} bytes free, "
                      f"keeping {self.min_free_bytes}")
        elif self.min_free_percent and state.free_percent < self.min_free_percent:
            reason = (f"spool disk below watermark: {state.free_percent:.1f}% free, "
                      f"keeping {self.min_free_percent:.1f}%")
        if reason is None:
            self.alarms.clear(ALARM_DISK)
        else:
            self.alarms.raise_alarm(ALARM_DISK, reason)
        return reason

    def disk_full(self, detail: str) -> None:
        """A write failed with ENOSPC/EDQUOT: alarm until a later store finds room."""
        self.alarms.raise_alarm(ALARM_DISK, f"spool disk full: {detail}")

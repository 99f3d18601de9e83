"""Spool files made ahead of time, so that an acknowledged C-STORE costs one data flush.

Making a new file durable costs a file-system journal commit (inode, blocks, folder
entry) on top of the data; overwriting blocks a file already owns flushes only data.
So a background thread keeps a pool of *slots*: files of ``slot_bytes`` zeros,
fsynced, renamed into ``slots/`` with the folder fsynced. A store writes the instance
at offset 0 of a free slot and ``fdatasync``s it; the journal row records the exact
size, and readers read that many bytes. A slot is used once; an instance larger than a
slot, or arriving when the pool is empty, takes the ordinary path (a new file).

Crash rules (tests/edge/test_power_loss.py cuts power under both paths): ``*.tmp``
files (unfinished slots) and slots of the wrong size are deleted on open; a slot
without a journal row is free, whatever it holds, since only a journal row makes a
file forwardable. Why, with figures from when it was made: docs/design/edge-spool.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from relay.edge.durable import fsync_dir

log = logging.getLogger(__name__)

SLOTS_DIR = "slots"
BATCH = 16
"""Slots made per folder fsync when refilling: the folder's entries are made durable
once for the batch, not once per slot."""
IDLE_S = 1.0
"""Seconds without a store before the pool refills. Making slots during a burst would
double the disk's writes and queue each store's flush behind the pool's own (measured:
slower than no pool at all), so the pool refills between bursts; a burst longer than
the pool writes new files for the rest, as without one."""
_ZEROS_CHUNK = 1 << 20


class SlotPool:
    """Free slots under ``folder``, refilled in the background up to ``target``.

    ``in_use``: slot names that journal rows point at (never handed out again).
    ``keep_free_bytes``: the pool does not make a slot that would leave the disk with
    less free space than this (the C-STORE watermark), so it never eats the room the
    watermark protects.
    """

    def __init__(self, folder: Path, *, target: int, slot_bytes: int, keep_free_bytes: int,
                 in_use: set[str]) -> None:
        self.folder, self.target, self.slot_bytes = folder, target, slot_bytes
        self.keep_free_bytes = keep_free_bytes
        self._free: deque[str] = deque()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = False
        self._last_take = 0.0
        folder.mkdir(exist_ok=True)
        self._recover(in_use)
        self._thread = threading.Thread(target=self._refill_loop, name="spool-slots", daemon=True)
        self._wanted.set()
        self._thread.start()

    def _recover(self, in_use: set[str]) -> None:
        for file in sorted(self.folder.iterdir()):
            if file.name in in_use:
                continue
            if file.suffix == ".tmp" or file.stat().st_size != self.slot_bytes:
                log.warning("removing unfinished spool slot %s", file.name)
                file.unlink()
            else:
                self._free.append(file.name)
        fsync_dir(self.folder)

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)

    def take(self, size: int) -> str | None:
        """A free slot's name for an instance of ``size`` bytes, or None (too big, or
        none ready: the caller writes a new file instead). Every call counts as a store,
        so the pool waits for quiet whatever the instances' sizes."""
        with self._lock:
            self._last_take = time.monotonic()
            name = self._free.popleft() if self._free and size <= self.slot_bytes else None
        self._wanted.set()
        return name

    def wait_full(self, timeout: float) -> bool:
        """Block until the pool holds ``target`` free slots (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.free < self.target and not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.free >= self.target

    def close(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout=10.0)

    # --- background refill -------------------------------------------------------------
    def _refill_loop(self) -> None:
        while not self._stopping:
            self._wanted.wait(timeout=5.0)
            self._wanted.clear()
            try:
                while not self._stopping and self._refill_batch():
                    pass
            except OSError as exc:  # disk full or failing: stores fall back to new files
                log.warning("spool slots not refilled: %s", exc)

    def _wait_idle(self) -> None:
        while not self._stopping:
            with self._lock:
                quiet = time.monotonic() - self._last_take
            if quiet >= IDLE_S:
                return
            time.sleep(IDLE_S - quiet)

    def _refill_batch(self) -> bool:
        """Make up to BATCH slots once stores are quiet; False when the pool is full or
        the disk has no room."""
        if self.free >= self.target:
            return False
        self._wait_idle()
        missing = min(BATCH, self.target - self.free)
        if missing <= 0 or self._stopping:
            return False
        room = shutil.disk_usage(self.folder).free - self.keep_free_bytes
        missing = min(missing, max(0, room // self.slot_bytes - 1))
        if missing <= 0:
            return False
        made = [self._make_one() for _ in range(missing)]
        fsync_dir(self.folder)  # the renames: only now may a store use these slots
        with self._lock:
            self._free.extend(made)
        return True

    def _make_one(self) -> str:
        name = uuid.uuid4().hex
        tmp = self.folder / f"{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            zeros = bytes(min(_ZEROS_CHUNK, self.slot_bytes))
            left = self.slot_bytes
            while left:
                left -= os.write(fd, zeros[:left])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, self.folder / name)
        return name


def write_slot(data: bytes, *, path: Path) -> None:
    """Write ``data`` at the start of slot ``path`` and flush it: once this returns, the
    bytes survive a power cut (the slot's size and blocks were already durable)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_exactly(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a spool file (a slot is longer than its instance)."""
    with open(path, "rb") as fh:
        return fh.read(size)

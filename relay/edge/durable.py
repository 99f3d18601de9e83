"""Writing files so that they survive a power cut: the edge's spool and outbox both
rely on these two steps (the file's bytes, then its folder's entry)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(data: bytes, *, final: Path) -> None:
    """Write ``data`` to ``final`` so that, once this returns, it survives a power cut.
    On failure nothing is left at ``final``."""
    try:
        with open(final, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final)
        raise


def make_dirs(path: Path) -> None:
    """Create folder ``path`` and its missing ancestors so that each one's name is
    durable: the parent is fsynced after every folder created in it. (A folder made
    with ``mkdir(parents=True)`` and never its parent fsynced can vanish, with all
    it holds, in a power cut: tests/edge/test_power_loss.py.)"""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_dir(created.parent)


@contextlib.contextmanager
def durable_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the small SQLite file ``path`` whose every commit survives a power
    cut (WAL, ``synchronous=FULL``), in autocommit mode; closed on leaving."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        yield conn
    finally:
        conn.close()


def create_durable_db(root: Path, name: str, schema: str) -> Path:
    """``root/name`` with ``schema`` applied (idempotent DDL), its folder and, when the
    file is new, its folder entry durable; the path, for ``durable_db``."""
    make_dirs(root)
    path = root / name
    created = not path.exists()
    with durable_db(path) as conn:
        conn.executescript(schema)
    if created:
        fsync_dir(root)
    return path

"""Helpers shared by the edge tests (kept out of conftest so they can be imported)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.edge.spool import JOURNAL_NAME


def journal_rows(spool_root: Path) -> list[dict[str, Any]]:
    """All journal rows, read through a connection of its own (what is committed)."""
    conn = sqlite3.connect(spool_root / JOURNAL_NAME)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM instances ORDER BY id")]
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

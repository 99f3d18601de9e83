"""The edge's minute report to the county: spool depth, oldest unsent, goodput, disk,
version and clock. Read-only on the journal; never patient data. The answer carries the
county's newest signed audit checkpoint, which the edge appends to its spool folder's
audit-checkpoints.jsonl (a copy out of the county's reach, for `relay audit verify
--checkpoints`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import relay
from relay.config import EdgeSettings
from relay.edge.clock import now_utc
from relay.edge.http import county_client
from relay.edge.durable import make_dirs
from relay.edge.journal import SpoolState
from relay.edge.journal import JOURNAL_NAME, read_counts

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/edges/heartbeat"
CHECKPOINTS_NAME = "audit-checkpoints.jsonl"
"""The county's audit checkpoints kept in the spool folder, one JSON line each."""
CHECKPOINT_FORMAT = "county-relay-audit-checkpoint/1"
RETRY_AFTER_FAILURE_S = 10.0
"""Seconds before the next beat after a failed one (the county restarting, the link down),
so the county sees the edge again soon after it returns rather than a minute later."""


@dataclass
class GoodputMeter:
    """Bytes delivered per second between two readings of the journal's sent total."""

    last_bytes: int | None = None
    last_at: float | None = None

    def update(self, sent_bytes: int, at: float) -> float | None:
        rate = None
        if self.last_bytes is not None and self.last_at is not None and at > self.last_at:
            rate = max(0.0, (sent_bytes - self.last_bytes) / (at - self.last_at))
        self.last_bytes, self.last_at = sent_bytes, at
        return rate


def sent_bytes(settings: EdgeSettings) -> int:
    """Total bytes of instances the county has confirmed (0 before the first run)."""
    path = settings.edge_spool_dir / JOURNAL_NAME
    if not path.is_file():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        row = conn.execute("SELECT COALESCE(SUM(size), 0) FROM instances WHERE state = ?",
                           (SpoolState.SENT,)).fetchone()
        return int(row[0])
    finally:
        conn.close()


def build_heartbeat(settings: EdgeSettings, meter: GoodputMeter) -> dict[str, Any]:
    """The heartbeat body (relay.county.edges.schemas.HeartbeatIn)."""
    counts = read_counts(settings.edge_spool_dir)
    make_dirs(settings.edge_spool_dir)
    return {
        "edge_time": now_utc().isoformat(),
        "spool_instances": counts.pending if counts else 0,
        "spool_bytes": counts.pending_bytes if counts else 0,
        "oldest_unsent_age_s": counts.oldest_pending_age_s if counts else None,
        "goodput_bps": meter.update(sent_bytes(settings), time.monotonic()),
        "disk_free_bytes": shutil.disk_usage(settings.edge_spool_dir).free,
        "version": relay.__version__,
        "last_error": ((counts.last_error if counts else None) or "")[:2000],
    }


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return ""
    return lines[-1].decode(errors="replace") if lines else ""


def keep_checkpoint(spool_dir: Path, checkpoint: Any) -> bool:
    """Append the county's audit checkpoint to the spool folder's copy unless it is the one
    kept last; True if it was appended. The edge does not judge it (the county verifies the
    signature when it checks against this copy), it only keeps what looks like one."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        return False
    line = json.dumps(checkpoint, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    path = spool_dir / CHECKPOINTS_NAME
    if len(line) > 4096 or _last_line(path) == line:
        return False
    make_dirs(spool_dir)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def send_heartbeat(client: httpx.Client, body: dict[str, Any], *, spool_dir: Path | None = None) -> float | None:
    """POST one heartbeat; the county's clock offset in seconds, or None if it failed. With
    ``spool_dir``, the audit checkpoint of the answer is kept there (keep_checkpoint)."""
    try:
        r = client.post(HEARTBEAT_PATH, json=body)
        r.raise_for_status()
        answer = r.json()
        offset = float(answer["clock_offset_s"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning("heartbeat failed: %s", type(exc).__name__)
        return None
    if spool_dir is not None and answer.get("audit_checkpoint"):
        try:
            keep_checkpoint(spool_dir, answer["audit_checkpoint"])
        except OSError as exc:
            log.warning("could not keep the county's audit checkpoint: %s", type(exc).__name__)
    return offset


def run_heartbeat(settings: EdgeSettings, stop: threading.Event) -> None:
    """Beat every ``edge_heartbeat_s`` until ``stop``; a failed beat is simply the next one."""
    meter = GoodputMeter()
    with county_client(settings, timeout=30.0) as client:
        while not stop.is_set():
            offset = send_heartbeat(client, build_heartbeat(settings, meter), spool_dir=settings.edge_spool_dir)
            if offset is not None and abs(offset) > 120:
                log.warning("edge clock differs from the county's by %.0f s", offset)
            failed = offset is None
            stop.wait(min(settings.edge_heartbeat_s, RETRY_AFTER_FAILURE_S) if failed else settings.edge_heartbeat_s)


def start_heartbeat(settings: EdgeSettings, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_heartbeat, args=(settings, stop), name="heartbeat", daemon=True)
    thread.start()
    return thread

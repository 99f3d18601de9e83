"""Logging setup for every relay process.

Log identifiers, never patient data: UIDs, AE titles, peers, sizes, digests, timings.
Patient names, IDs and report text stay out of logs (STYLE.md habit 12).
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO", *, process: str = "relay") -> None:
    """Configure the root logger once per process: one line per event, UTC times."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = __import__("time").gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at INFO; keep its association summaries only.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # Celery logs "received" and "succeeded" per task; our tasks log one line each
    # with identifiers and timings (STYLE.md: one log line per unit of work).
    # fontTools (PDF font subsetting) logs every glyph at INFO.
    for name in ("celery.worker.strategy", "celery.app.trace", "fontTools"):
        logging.getLogger(name).setLevel(logging.WARNING)

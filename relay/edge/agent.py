"""The township edge agent: SCP + spool + forwarder in one process.

``run_edge`` is what `relay edge run` calls; ``edge_status`` is what `relay edge
status` calls, and is safe to run while the agent is running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import Any

from relay.config import Settings
from relay.edge.forward import start_forwarder
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool, read_counts

log = logging.getLogger(__name__)

FORWARDER_JOIN_S = 30.0
"""Seconds shutdown waits for the forwarder to finish its current upload. An upload
cut short is simply retried on the next start (the county is idempotent)."""


def run_edge(settings: Settings, *, stop: threading.Event) -> None:
    """Receive, spool and forward until ``stop`` is set, then shut down cleanly:
    the forwarder, then the SCP (running C-STOREs are answered), then the spool."""
    with contextlib.ExitStack() as stack:
        spool = Spool(settings.edge_spool_dir)
        stack.callback(spool.close)
        server = start_scp(settings, spool)
        stack.callback(stop_scp, server)
        forward_stop = threading.Event()
        forwarder = start_forwarder(spool=spool, settings=settings, stop=forward_stop)
        stack.callback(_stop_forwarder, forwarder, forward_stop, spool)
        host, port = server.server_address[:2]
        log.info("edge started ae=%s address=%s port=%d county=%s spool=%s",
                 settings.edge_ae_title, host, port, settings.county_url, spool.root)
        stop.wait()
        log.info("edge stopping")
    log.info("edge stopped")


def _stop_forwarder(thread: threading.Thread, stop: threading.Event, spool: Spool) -> None:
    stop.set()
    spool.wake()
    thread.join(FORWARDER_JOIN_S)
    if thread.is_alive():
        log.warning("forwarder still busy after %.0fs; leaving it", FORWARDER_JOIN_S)


def edge_status(settings: Settings) -> dict[str, Any]:
    """Spool depth and the oldest unsent instance, read from the journal (no patient
    data). ``journal`` is ``"missing"`` before the agent first ran."""
    counts = read_counts(settings.edge_spool_dir)
    status: dict[str, Any] = {
        "site": settings.edge_site,
        "ae_title": settings.edge_ae_title,
        "address": f"{settings.edge_host}:{settings.edge_port}",
        "county_url": settings.county_url,
        "spool_dir": str(settings.edge_spool_dir),
        "journal": "missing" if counts is None else "ok",
    }
    if counts is None:
        counts_dict: dict[str, Any] = {
            "pending": 0, "pending_bytes": 0, "retrying": 0, "sent": 0,
            "oldest_pending_received_at": None, "oldest_pending_age_s": None,
            "last_error": None,
        }
    else:
        counts_dict = dataclasses.asdict(counts)
    status.update(counts_dict)
    return status

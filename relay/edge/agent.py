"""The township edge agent: SCP + spool + forwarder + status page in one process.

``run_edge`` is what `relay edge run` calls; ``edge_status`` is what `relay edge
status` calls, and is safe to run while the agent is running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from relay.config import EdgeSettings
from relay.edge.acks import AckJournal, start_delivery
from relay.edge.admission import Alarms, disk_state
from relay.edge.completeness import StudyPolicy, list_studies, policy_from
from relay.edge.commitment import CommitmentService
from relay.edge.dimse_services import DimseService, start_services
from relay.edge.heartbeat import start_heartbeat
from relay.edge.orders import OrderCache
from relay.edge.orders import start_sync as start_order_sync
from relay.edge.bundle_outbox import uploaded_bytes
from relay.edge.report_pickup import start_pickup
from relay.edge.forward import start_forwarder
from relay.edge.scp import start_scp, stop_scp
from relay.edge.clock import now_utc
from relay.edge.journal import JOURNAL_NAME, read_counts
from relay.edge.spool import Spool
from relay.edge.technicians import TechnicianCache, start_sync
from relay.edge.worklist import WorklistService

log = logging.getLogger(__name__)

FORWARDER_JOIN_S = 30.0
"""Seconds shutdown waits for the forwarder to finish its current upload. An upload
cut short is simply retried on the next start (the county is idempotent)."""


SIGNAL_POLL_S = 0.5
"""Seconds between wake-ups of the main thread while it waits for ``stop``. A signal
(SIGTERM) may be taken by any thread; Python runs its handler only when the main
thread next executes bytecode, so an untimed wait could sleep through it forever."""


def study_policy(settings: EdgeSettings) -> StudyPolicy:
    """The completeness and STAT policy from the settings (validated here, at start)."""
    return policy_from(quiet_s=settings.edge_study_quiet_s,
                       stat_quiet_s=settings.edge_study_stat_quiet_s,
                       max_wait_s=settings.edge_study_max_wait_s,
                       stat_rules=settings.edge_stat_rules)


def run_edge(settings: EdgeSettings, *, stop: threading.Event) -> None:
    """Receive, spool and forward until ``stop`` is set, then shut down cleanly:
    the page, the forwarder, then the SCP (running C-STOREs are answered), the spool."""
    with contextlib.ExitStack() as stack:
        spool = Spool(settings.edge_spool_dir, policy=study_policy(settings),
                      slot_count=settings.edge_spool_slots,
                      slot_bytes=settings.edge_spool_slot_kib * 1024,
                      keep_free_bytes=settings.edge_min_free_bytes)
        stack.callback(spool.close)
        alarms = Alarms()
        server = start_scp(settings, spool, alarms=alarms)
        stack.callback(stop_scp, server)
        forward_stop = threading.Event()
        forwarder = start_forwarder(spool=spool, settings=settings, stop=forward_stop)
        stack.callback(_stop_forwarder, forwarder, forward_stop, spool)
        background_stop = threading.Event()
        stack.callback(background_stop.set)
        acks = AckJournal(spool.root)
        technicians = TechnicianCache(spool.root, max_failures=settings.login_max_failures,
                                      lockout_minutes=settings.login_lockout_minutes)
        if settings.edge_status_port >= 0:
            start_sync(settings, technicians, background_stop)
        orders = OrderCache(spool.root)
        start_order_sync(settings, orders, background_stop)
        _start_services(stack, settings=settings, orders=orders)
        _start_page(stack, settings=settings, spool=spool, alarms=alarms, technicians=technicians, acks=acks,
                    orders=orders)
        start_heartbeat(settings, background_stop)
        start_pickup(settings, background_stop)
        start_delivery(settings, acks, background_stop)
        host, port = server.server_address[:2]
        log.info("edge started ae=%s address=%s port=%d county=%s spool=%s",
                 settings.edge_ae_title, host, port, settings.county_url, spool.root)
        next_prune = 0.0
        while not stop.wait(SIGNAL_POLL_S):
            if time.monotonic() >= next_prune:
                _prune(spool, settings)
                next_prune = time.monotonic() + PRUNE_EVERY_S
        log.info("edge stopping")
    log.info("edge stopped")


PRUNE_EVERY_S = 600.0
"""Seconds between retention sweeps of the spool (files confirmed long enough ago)."""


def _prune(spool: Spool, settings: EdgeSettings) -> None:
    if settings.edge_retention_hours < 0:
        return
    try:
        files, freed = spool.prune_sent(older_than=timedelta(hours=settings.edge_retention_hours))
    except OSError as exc:
        log.warning("spool retention sweep failed: %s", exc)
        return
    if files:
        log.info("spool retention: removed %d confirmed files, %d bytes", files, freed)


def _start_services(stack: contextlib.ExitStack, *, settings: EdgeSettings, orders: OrderCache) -> None:
    """Start the services AE (Modality Worklist, Storage Commitment) unless disabled (port 0).
    Another pynetdicom service joins by being added to this list (relay.edge.dimse_services)."""
    if settings.edge_services_port == 0:
        return
    commitment = CommitmentService(settings)  # reads the spool's journal: after the spool is open
    commitment.start()
    stack.callback(commitment.stop)  # registered first, so it stops after the AE
    services: list[DimseService] = [
        WorklistService(orders, timezone=settings.timezone, default_charset=settings.edge_mwl_default_charset),
        commitment]
    try:
        server = start_services(settings, services)
    except OSError as exc:  # receiving matters more than the worklist: keep going
        log.error("DICOM services not available on %s:%d: %s", settings.edge_host, settings.edge_services_port,
                  exc)
        return
    stack.callback(server.stop)


def _start_page(stack: contextlib.ExitStack, *, settings: EdgeSettings, spool: Spool,
                alarms: Alarms, technicians: TechnicianCache, acks: AckJournal, orders: OrderCache) -> None:
    """Start the technician's page unless disabled (port -1)."""
    if settings.edge_status_port < 0:
        return
    from relay.edge.status_page import StatusPage

    page = StatusPage(spool=spool, alarms=alarms, host=settings.edge_status_host,
                      port=settings.edge_status_port, timezone=settings.timezone, settings=settings,
                      technicians=technicians, acks=acks, orders=orders)
    try:
        page.start()
    except RuntimeError as exc:  # receiving matters more than the page: keep going
        log.error("status page not available on %s:%d: %s", settings.edge_status_host,
                  settings.edge_status_port, exc)
        return
    stack.callback(page.stop)
    scheme = "https" if settings.edge_status_tls_cert else "http"
    log.info("status page at %s://%s:%d/", scheme, settings.edge_status_host, page.port)


def _stop_forwarder(thread: threading.Thread, stop: threading.Event, spool: Spool) -> None:
    stop.set()
    spool.wake()
    thread.join(FORWARDER_JOIN_S)
    if thread.is_alive():
        log.warning("forwarder still busy after %.0fs; leaving it", FORWARDER_JOIN_S)


_EMPTY_COUNTS: dict[str, Any] = {
    "pending": 0, "pending_bytes": 0, "retrying": 0, "sent": 0,
    "oldest_pending_received_at": None, "oldest_pending_age_s": None, "last_error": None,
}


def edge_status(settings: EdgeSettings) -> dict[str, Any]:
    """Spool depth, disk, and today's studies (UIDs, states; no patient data), read
    from the journal. ``journal`` is ``"missing"`` before the agent first ran."""
    counts = read_counts(settings.edge_spool_dir)
    status: dict[str, Any] = {
        "site": settings.edge_site,
        "ae_title": settings.edge_ae_title,
        "address": f"{settings.edge_host}:{settings.edge_port}",
        "county_url": settings.county_url,
        "spool_dir": str(settings.edge_spool_dir),
        "status_page": _page_url(settings),
        "journal": "missing" if counts is None else "ok",
    }
    status.update(_EMPTY_COUNTS if counts is None else dataclasses.asdict(counts))
    status.update(_disk(settings))
    status["studies_today"] = [] if counts is None else _studies_today(settings)
    return status


def _page_url(settings: EdgeSettings) -> str | None:
    if settings.edge_status_port < 0:
        return None
    scheme = "https" if settings.edge_status_tls_cert else "http"
    return f"{scheme}://{settings.edge_status_host}:{settings.edge_status_port}/"


def _disk(settings: EdgeSettings) -> dict[str, Any]:
    """Free space of the spool's disk and whether it is below the watermark (alarm)."""
    folder = settings.edge_spool_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    disk = disk_state(folder)
    low = disk.free_bytes < settings.edge_min_free_bytes or (
        settings.edge_min_free_percent > 0
        and disk.free_percent < settings.edge_min_free_percent)
    return {"disk_free_bytes": disk.free_bytes, "disk_free_percent": round(disk.free_percent, 1),
            "disk_alarm": "below watermark: C-STORE refused with 0xA700" if low else None}


def _studies_today(settings: EdgeSettings) -> list[dict[str, Any]]:
    from relay.edge.status_page import start_of_today

    zone = ZoneInfo(settings.timezone)
    conn = sqlite3.connect(settings.edge_spool_dir / JOURNAL_NAME, timeout=10.0)
    conn.row_factory = sqlite3.Row
    try:
        rows = list_studies(conn, since=start_of_today(zone, datetime.now(zone)),
                            policy=study_policy(settings), now=now_utc(),
                            uploading=uploaded_bytes(settings.edge_spool_dir))
    except sqlite3.OperationalError:  # a journal from before studies were tracked
        return []
    finally:
        conn.close()
    return [{"study_uid": r.study_uid, "first_received_at": r.first_at,
             "modality": r.modality, "calling_ae": r.calling_ae,
             "instances": r.instance_count, "additions": r.late_count,
             "priority": r.priority.value, "state": r.phase.value,
             "percent_sent": r.percent_sent, "last_error": r.last_error} for r in rows]

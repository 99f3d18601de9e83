"""Signed reports home: fetch them from the county, store them into the township PACS.

Each round lists the township's pending deliveries at the county and records the new
ones in the edge's delivery state (``relay.edge.report_state``, fsynced beside the
spool). Then, for every delivery not finished, critical ones first, each step on its
own: the fetch of its objects into ``<spool>/reports/<id>/`` (fsynced), the C-STORE of
its DICOM objects (SR, Encapsulated PDF) to each configured destination, and, once
every destination has them, the confirmation to the county. A step that fails is
retried with its own backoff (from ``edge_report_poll_s`` doubling to
``edge_report_retry_max_s``), forever; it holds up neither the other deliveries nor
the other destinations, and a destination that took a report is not sent it again,
also after a restart. A destination whose association fails is skipped for the rest
of the round (one connection attempt per round, not one per report). The
technician's page shows a report as soon as it is fetched.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relay.config import EdgeSettings
from relay.edge.durable import fsync_dir, make_dirs
from relay.edge.forward import retry_delay
from relay.edge.http import county_client
from relay.edge.report_state import CONFIRM, FETCH, ReportState, store_step
from relay.send import send_files

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/edges/reports"
DICOM_OBJECTS = ("sr", "encapsulated_pdf")


@dataclass(frozen=True, slots=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destinations(text: str) -> list[Destination]:
    """``AE@host:port, ...`` -> destinations; a malformed entry is a ValueError naming it."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ae, at, address = item.partition("@")
        host, colon, port = address.rpartition(":")
        if not (ae and at and host and colon and port.isdigit()):
            raise ValueError(f"report destination {item!r} is not AE@host:port")
        found.append(Destination(ae, host, int(port)))
    return found


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def object_path(target: Path, name: str) -> Path:
    """Where object ``name`` of a delivery is kept in its folder ``target``."""
    return target / (f"{name}.dcm" if name in DICOM_OBJECTS else f"{name}.{'pdf' if name == 'pdf' else 'json'}")


def missing_objects(folder: Path, item: dict[str, Any]) -> list[str]:
    """Objects of the delivery not (or no longer) in its folder under ``folder``."""
    target = folder / str(item["delivery_id"])
    names = [*item["objects"], "delivery"]
    return [name for name in names if not object_path(target, name).exists()]


def fetch(client: httpx.Client, item: dict[str, Any], folder: Path) -> Path:
    """Download every object of a delivery (idempotent: what is already here is kept)."""
    target = folder / str(item["delivery_id"])
    make_dirs(target)
    for name in item["objects"]:
        path = object_path(target, name)
        if not path.exists():
            r = client.get(f"{REPORTS_PATH}/{item['delivery_id']}/objects/{name}")
            r.raise_for_status()
            _write(path, r.content)
    _write(target / "delivery.json", json.dumps(item, ensure_ascii=False).encode())
    return target


class DestinationDown(Exception):
    """No association with the destination: it concerns every report this round."""


def store_at(folder: Path, dest: Destination) -> str | None:
    """C-STORE the delivery's DICOM objects to ``dest``; None if it accepted all (or
    there is nothing to store), else why not. Raises DestinationDown when no
    association could be made."""
    files = [folder / f"{name}.dcm" for name in DICOM_OBJECTS if (folder / f"{name}.dcm").exists()]
    if not files:
        return None
    try:
        results = send_files(files, host=dest.host, port=dest.port, called_ae=dest.ae_title,
                             calling_ae="RELAY_EDGE")
    except (ConnectionError, OSError) as exc:
        raise DestinationDown(str(exc)) from exc
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"
    refused = [r for r in results if not (r.status is not None and (r.status == 0 or 0xB000 <= r.status <= 0xBFFF))]
    if refused:
        return ", ".join(f"{r.sop_uid} status={'none' if r.status is None else f'0x{r.status:04X}'}" for r in refused)
    return None


def store_at_township(folder: Path, destinations: list[Destination]) -> list[str]:
    """C-STORE the delivery's DICOM objects to each destination; the ones that accepted all."""
    accepted = []
    for dest in destinations:
        try:
            if store_at(folder, dest) is None:
                accepted.append(dest.label)
        except DestinationDown as exc:
            log.warning("report destination %s unavailable: %s", dest.label, exc)
    return accepted


@dataclass
class _Round:
    """One pickup round's context."""

    client: httpx.Client
    settings: EdgeSettings
    destinations: list[Destination]
    state: ReportState
    rng: random.Random
    down: set[str]
    """Destinations whose association failed this round."""

    def failed(self, delivery_id: int, step: str, error: str) -> float:
        attempts = self.state.step(delivery_id, step).attempts + 1
        delay = retry_delay(attempts=attempts, lo=self.settings.edge_report_poll_s,
                            hi=max(self.settings.edge_report_poll_s, self.settings.edge_report_retry_max_s),
                            rng=self.rng)
        self.state.failed(delivery_id, step, error=error, retry_in_s=delay)
        log.warning("report step failed delivery=%d step=%s attempt=%d retry_in=%.1fs: %s",
                    delivery_id, step, attempts, delay, error)
        return delay


def list_pending(client: httpx.Client) -> list[dict[str, Any]]:
    """The county's pending deliveries for this site."""
    r = client.get(REPORTS_PATH)
    r.raise_for_status()
    items = r.json()
    if not isinstance(items, list):
        raise ValueError("the report list is not a JSON list")
    return [item for item in items if isinstance(item, dict) and "delivery_id" in item]


def deliver_round(client: httpx.Client, settings: EdgeSettings, destinations: list[Destination], *,
                  state: ReportState | None = None, rng: random.Random | None = None) -> int:
    """One round: learn the pending reports, then advance every unfinished delivery by
    the steps that are due. Returns how many were confirmed delivered this round.
    Never raises for the county's, a destination's or one report's faults."""
    own = state is None
    state = state or ReportState(settings.edge_spool_dir)
    try:
        try:
            state.remember(list_pending(client))
        except (httpx.HTTPError, ValueError) as exc:  # reports already known still go out
            log.warning("report list unavailable: %s", type(exc).__name__)
        run = _Round(client, settings, destinations, state, rng or random.Random(), set())
        return sum(1 for item in state.open_deliveries() if _advance(run, item))
    finally:
        if own:
            state.close()


def _advance(run: _Round, item: dict[str, Any]) -> bool:
    """Do the due steps of one delivery; True if it was confirmed now."""
    delivery_id = int(item["delivery_id"])
    folder = run.settings.edge_spool_dir / "reports"
    fetched = run.state.step(delivery_id, FETCH)
    if not fetched.done or missing_objects(folder, item):  # (files lost since: fetch again)
        if not fetched.done and fetched.next_at > time.time():
            return False
        try:
            fetch(run.client, item, folder)
        except (httpx.HTTPError, OSError, KeyError, TypeError, ValueError) as exc:
            run.failed(delivery_id, FETCH, _why(exc))
            return False
        run.state.succeeded(delivery_id, FETCH)
        log.info("report fetched delivery=%d study=%s critical=%s", delivery_id,
                 item.get("study_instance_uid"), item.get("critical"))
    for dest in run.destinations:
        _store(run, delivery_id, folder / str(delivery_id), dest)
    if not all(run.state.step(delivery_id, store_step(d.label)).done for d in run.destinations):
        return False
    if not run.state.due(delivery_id, CONFIRM):
        return False
    detail = ", ".join(d.label for d in run.destinations) or "technician page"
    try:
        run.client.post(f"{REPORTS_PATH}/{delivery_id}/delivered", json={"detail": detail}).raise_for_status()
    except httpx.HTTPError as exc:
        run.failed(delivery_id, CONFIRM, _why(exc))
        return False
    run.state.succeeded(delivery_id, CONFIRM)
    run.state.finish(delivery_id)
    log.info("report delivered delivery=%d study=%s revision=%s critical=%s to=%s", delivery_id,
             item.get("study_instance_uid"), item.get("revision"), item.get("critical"), detail)
    return True


def _store(run: _Round, delivery_id: int, folder: Path, dest: Destination) -> None:
    step = store_step(dest.label)
    if dest.label in run.down or not run.state.due(delivery_id, step):
        return
    try:
        refused = store_at(folder, dest)
    except DestinationDown as exc:
        run.down.add(dest.label)
        run.failed(delivery_id, step, f"unavailable: {exc}")
        return
    if refused is not None:
        run.failed(delivery_id, step, f"refused: {refused}")
        return
    run.state.succeeded(delivery_id, step)
    log.info("report stored delivery=%d at=%s", delivery_id, dest.label)


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


def run_pickup(settings: EdgeSettings, stop: threading.Event) -> None:
    """Deliver reports every ``edge_report_poll_s`` until ``stop``; each step that fails
    waits its own backoff."""
    destinations = parse_destinations(settings.edge_report_destinations)
    rng = random.Random()
    with county_client(settings, timeout=60.0) as client, ReportState(settings.edge_spool_dir) as state:
        while not stop.is_set():
            try:
                deliver_round(client, settings, destinations, state=state, rng=rng)
            except Exception:  # a bug of ours must not end report delivery
                log.exception("report pickup round failed")
            stop.wait(settings.edge_report_poll_s)


def start_pickup(settings: EdgeSettings, stop: threading.Event) -> threading.Thread:
    parse_destinations(settings.edge_report_destinations)  # a bad setting fails at start
    thread = threading.Thread(target=run_pickup, args=(settings, stop), name="reports", daemon=True)
    thread.start()
    return thread


def local_reports(settings: EdgeSettings) -> list[dict[str, Any]]:
    """Reports fetched to this edge, newest first (for the technician's page)."""
    folder = settings.edge_spool_dir / "reports"
    if not folder.is_dir():
        return []
    found = [json.loads((d / "delivery.json").read_text()) for d in folder.iterdir() if (d / "delivery.json").exists()]
    return sorted(found, key=lambda item: item["delivery_id"], reverse=True)

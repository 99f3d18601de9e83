"""Signed reports home: fetch them from the county, store them into the township PACS.

Each pending delivery is fetched whole into ``<spool>/reports/<id>/`` (fsynced), its
DICOM objects (SR, Encapsulated PDF) are C-STOREd to every configured destination,
and only when every destination accepted them is the delivery confirmed to the
county. A destination that refuses or is down is retried at the next round, forever;
the technician's page shows the report as soon as it is fetched.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relay.config import Settings
from relay.edge.http import county_client
from relay.send import send_files

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/edges/reports"
DICOM_OBJECTS = ("sr", "encapsulated_pdf")


@dataclass(frozen=True, slots=True)
class Destination:
    ae_title: str
    host: str
    port: int


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


def fetch(client: httpx.Client, item: dict[str, Any], folder: Path) -> Path:
    """Download every object of a delivery (idempotent: what is already here is kept)."""
    target = folder / str(item["delivery_id"])
    target.mkdir(parents=True, exist_ok=True)
    for name in item["objects"]:
        path = target / (f"{name}.dcm" if name in DICOM_OBJECTS else f"{name}.{'pdf' if name == 'pdf' else 'json'}")
        if not path.exists():
            r = client.get(f"{REPORTS_PATH}/{item['delivery_id']}/objects/{name}")
            r.raise_for_status()
            _write(path, r.content)
    _write(target / "delivery.json", json.dumps(item, ensure_ascii=False).encode())
    return target


def store_at_township(folder: Path, destinations: list[Destination]) -> list[str]:
    """C-STORE the delivery's DICOM objects to each destination; the ones that accepted all."""
    files = [folder / f"{name}.dcm" for name in DICOM_OBJECTS if (folder / f"{name}.dcm").exists()]
    accepted = []
    for dest in destinations:
        try:
            results = send_files(files, host=dest.host, port=dest.port, called_ae=dest.ae_title,
                                 calling_ae="RELAY_EDGE") if files else []
        except (ConnectionError, OSError, ValueError) as exc:
            log.warning("report destination %s@%s:%d unavailable: %s", dest.ae_title, dest.host, dest.port, exc)
            continue
        if all(r.status is not None and (r.status == 0 or 0xB000 <= r.status <= 0xBFFF) for r in results):
            accepted.append(f"{dest.ae_title}@{dest.host}:{dest.port}")
    return accepted


def deliver_round(client: httpx.Client, settings: Settings, destinations: list[Destination]) -> int:
    """One round: fetch pending reports, store them, confirm those stored everywhere."""
    r = client.get(REPORTS_PATH)
    r.raise_for_status()
    done = 0
    for item in r.json():
        folder = fetch(client, item, settings.edge_spool_dir / "reports")
        accepted = store_at_township(folder, destinations)
        if len(accepted) == len(destinations):
            client.post(f"{REPORTS_PATH}/{item['delivery_id']}/delivered",
                        json={"detail": ", ".join(accepted) or "technician page"}).raise_for_status()
            log.info("report delivered delivery=%s study=%s revision=%s critical=%s to=%s", item["delivery_id"],
                     item["study_instance_uid"], item["revision"], item["critical"], accepted or "page")
            done += 1
    return done


def run_pickup(settings: Settings, stop: threading.Event) -> None:
    """Deliver reports every ``edge_report_poll_s`` until ``stop``; failures wait a round."""
    destinations = parse_destinations(settings.edge_report_destinations)
    with county_client(settings, timeout=60.0) as client:
        while not stop.is_set():
            try:
                deliver_round(client, settings, destinations)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("report pickup failed: %s", type(exc).__name__)
            stop.wait(settings.edge_report_poll_s)


def start_pickup(settings: Settings, stop: threading.Event) -> threading.Thread:
    parse_destinations(settings.edge_report_destinations)  # a bad setting fails at start
    thread = threading.Thread(target=run_pickup, args=(settings, stop), name="reports", daemon=True)
    thread.start()
    return thread


def local_reports(settings: Settings) -> list[dict[str, Any]]:
    """Reports fetched to this edge, newest first (for the technician's page)."""
    folder = settings.edge_spool_dir / "reports"
    if not folder.is_dir():
        return []
    found = [json.loads((d / "delivery.json").read_text()) for d in folder.iterdir() if (d / "delivery.json").exists()]
    return sorted(found, key=lambda item: item["delivery_id"], reverse=True)

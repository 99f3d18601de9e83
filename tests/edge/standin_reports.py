"""A STAND-IN for the county's report routes a township edge uses (``/api/edges/reports``):
the pending list, the objects of each delivery, ``…/delivered``. Real HTTP over
loopback, answers the test scripts (an object that fails to download), and a record of
every request, so the edge's pickup can be tested for what it fetches, stores and
confirms. The county's own side of these routes is tested in tests/county/test_delivery.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.standin_county import TOKEN

PREFIX = "/api/edges/reports"


@dataclass
class ReportsState:
    """The deliveries on offer and what the edge did with them."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[int, str], bytes] = field(default_factory=dict)
    failing: set[int] = field(default_factory=set)
    """Deliveries whose objects answer 500."""
    delivered: list[int] = field(default_factory=list)
    """Delivery ids in the order ``…/delivered`` was posted (repeats kept)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, delivery_id: int, *, critical: bool = False) -> list[str]:
        """Offer a delivery with an SR-like and a PDF-like DICOM object (small CT
        instances: the edge relays bytes, it does not look inside); their SOP UIDs."""
        uids = []
        with self.lock:
            for name in ("sr", "encapsulated_pdf"):
                ds = ct_dataset(seed=delivery_id)
                self.objects[(delivery_id, name)] = part10_bytes(ds)
                uids.append(str(ds.SOPInstanceUID))
            self.objects[(delivery_id, "signed")] = json.dumps({"delivery": delivery_id}).encode()
            self.items[delivery_id] = {
                "delivery_id": delivery_id, "study_instance_uid": f"1.2.3.{delivery_id}", "revision": 1,
                "kind": "report", "critical": critical, "reader": "dr.wang",
                "signed_at": "2026-12-04T08:00:00Z", "objects": ["encapsulated_pdf", "signed", "sr"]}
        return uids


class _Handler(BaseHTTPRequestHandler):
    state: ReportsState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", media: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _allowed(self) -> bool:
        with self.state.lock:
            self.state.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"status": 401}')
            return False
        return True

    def do_GET(self) -> None:
        if not self._allowed():
            return
        parts = self.path[len(PREFIX):].strip("/").split("/")
        with self.state.lock:
            if parts == [""]:
                pending = [item for key, item in sorted(self.state.items.items())
                           if key not in self.state.delivered]
                pending.sort(key=lambda item: not item["critical"])
                self._answer(200, json.dumps(pending).encode())
                return
            delivery_id, name = int(parts[0]), parts[2]
            if delivery_id in self.state.failing:
                self._answer(500, b'{"status": 500}')
                return
            data = self.state.objects.get((delivery_id, name))
        if data is None:
            self._answer(404, b'{"status": 404}')
        else:
            self._answer(200, data, "application/octet-stream")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if not self._allowed():
            return
        parts = self.path[len(PREFIX):].strip("/").split("/")
        if len(parts) == 2 and parts[1] == "delivered":
            with self.state.lock:
                self.state.delivered.append(int(parts[0]))
            self._answer(204)
        else:
            self._answer(404, b'{"status": 404}')


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class StandInReports:
    """Runs the stand-in on a free loopback port until ``close()``."""

    def __init__(self) -> None:
        self.state = ReportsState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

"""A stand-in for the county ingest endpoint, speaking the contract in relay.dicom.wire.

It is a stand-in on purpose: the real county app (database, object store, workers)
is tested end to end elsewhere; here the edge's forwarder is tested against real
HTTP over loopback, with answers the test scripts (503 twice, always 422, ...).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from relay.dicom import wire
from relay.dicom.header import InvalidInstance, read_ids

TOKEN = "site-token-for-tests"


@dataclass
class Received:
    """One request as the stand-in saw it."""

    status: int
    sop_uid: str | None
    headers: dict[str, str]
    body: bytes


@dataclass
class CountyState:
    """What the stand-in has seen and how it will answer next."""

    scripted: deque[int] = field(default_factory=deque)
    """Statuses to answer with, one per request, before behaving normally."""
    always: int | None = None
    """If set, every request gets this status (after ``scripted`` is used up)."""
    raw_200_body: bytes | None = None
    """If set, a 200 answer carries these bytes instead of the JSON outcome."""
    requests: list[Received] = field(default_factory=list)
    stored: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent_uids(self) -> list[str]:
        """SOP Instance UIDs the stand-in answered 200 for, in arrival order."""
        with self.lock:
            return [r.sop_uid for r in self.requests if r.status == 200 and r.sop_uid]


def _problem(status: int, title: str) -> bytes:
    return json.dumps({"type": "about:blank", "status": status, "title": title}).encode()


class _Handler(BaseHTTPRequestHandler):
    state: CountyState

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, answer, sop_uid = self._decide(body)
        with self.state.lock:
            self.state.requests.append(Received(status, sop_uid, dict(self.headers), body))
        self.send_response(status)
        media = "application/json" if status == 200 else "application/problem+json"
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _decide(self, body: bytes) -> tuple[int, bytes, str | None]:
        state = self.state
        with state.lock:
            forced = state.scripted.popleft() if state.scripted else state.always
        if self.path != wire.INGEST_PATH:
            return 404, _problem(404, "not found"), None
        if forced is not None and forced != 200:
            return forced, _problem(forced, "scripted refusal"), None
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, _problem(401, "unknown site"), None
        sha = hashlib.sha256(body).hexdigest()
        if self.headers.get(wire.HEADER_SHA256) != sha:
            return 422, _problem(422, "sha256 mismatch"), None
        try:
            sop_uid = read_ids(body).sop_uid
        except InvalidInstance:
            return 422, _problem(422, "not DICOM"), None
        return 200, self._outcome(sop_uid, sha), sop_uid

    def _outcome(self, sop_uid: str, sha: str) -> bytes:
        state = self.state
        if state.raw_200_body is not None:
            return state.raw_200_body
        with state.lock:
            outcome = "duplicate" if (sop_uid, sha) in state.stored else "stored"
            state.stored.add((sop_uid, sha))
        return json.dumps({"outcome": outcome, "sop_instance_uid": sop_uid,
                           "sha256": sha}).encode()


class StandInCounty:
    """Runs the stand-in on a free loopback port until ``close()``."""

    def __init__(self) -> None:
        self.state = CountyState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

"""A STAND-IN for the county's bundle ingest endpoints (protocol in relay.dicom.wire).

It is a stand-in on purpose: the real county app (database, object store, workers)
is tested end to end elsewhere; here the edge's forwarder is tested against real
HTTP over loopback, with answers the test scripts (503 for a while, 422 at complete,
slow chunks, ...). It keeps everything in memory, decodes bundles with the shared
``relay.dicom.bundle`` and counts every chunk byte that reached it (also of chunks
cut short), so tests can check how much a cut made the edge re-send.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from relay.dicom import wire
from relay.dicom.bundle import BundleError, decode_bundle

TOKEN = "site-token-for-tests"


@dataclass
class Received:
    """One request as the stand-in saw it."""

    method: str
    path: str
    status: int
    bundle_id: str | None
    nbytes: int = 0
    """Body bytes that arrived (for PATCH: also of a chunk cut short)."""
    at: float = field(default_factory=time.monotonic)


@dataclass
class Staged:
    """One announced bundle: its announcement, the bytes held, its results once done."""

    meta: dict[str, Any]
    data: bytearray = field(default_factory=bytearray)
    results: list[dict[str, str]] | None = None


@dataclass
class CountyState:
    """What the stand-in has seen and how it will answer next."""

    scripted: deque[int] = field(default_factory=deque)
    """Statuses to answer with, one per request (any kind), before behaving normally."""
    always: int | None = None
    """If set, every request gets this status (after ``scripted`` is used up)."""
    complete_scripted: deque[int] = field(default_factory=deque)
    """Statuses for the next completes (e.g. 422: bytes did not verify)."""
    chunk_delay_s: float = 0.0
    """Seconds each PATCH waits before answering (a slow county or link)."""
    requests: list[Received] = field(default_factory=list)
    bundles: dict[str, Staged] = field(default_factory=dict)
    stored: dict[tuple[str, str], bytes] = field(default_factory=dict)
    arrivals: list[str] = field(default_factory=list)
    """SOP Instance UIDs in the order their bundle completed."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold_at_patch: int | None = None
    """If set, the PATCH with this number (counted by ``patches_seen``) waits before
    reading its body until ``release()``: a test then knows the edge has that chunk on
    the wire and no later one, however loaded the machine is."""
    patches_seen: int = 0
    holding: threading.Event = field(default_factory=threading.Event)
    """Set while a PATCH waits at the hold."""
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self, *, after: int) -> None:
        """Hold the ``after``-th PATCH from now (1: the next one) until ``release()``;
        a PATCH held before goes on."""
        with self.lock:
            previous = self.released
            self.holding, self.released = threading.Event(), threading.Event()
            self.hold_at_patch = self.patches_seen + after
        previous.set()

    def release(self) -> None:
        with self.lock:
            self.hold_at_patch = None
        self.released.set()

    def _gate(self) -> None:
        with self.lock:
            self.patches_seen += 1
            held = self.patches_seen == self.hold_at_patch
            holding, released = self.holding, self.released
        if held:
            holding.set()
            released.wait(120)

    def sent_uids(self) -> list[str]:
        """SOP Instance UIDs the stand-in holds, in arrival order."""
        with self.lock:
            return list(self.arrivals)

    def patch_bytes(self, bundle_id: str | None = None) -> int:
        """Chunk bytes that reached the stand-in (all bundles, or one)."""
        with self.lock:
            return sum(r.nbytes for r in self.requests if r.method == "PATCH"
                       and (bundle_id is None or r.bundle_id == bundle_id))


def _problem(status: int, title: str) -> bytes:
    return json.dumps({"type": "about:blank", "status": status, "title": title}).encode()


def _progress(bundle_id: str, staged: Staged) -> dict[str, Any]:
    state = "complete" if staged.results is not None else "open"
    return {"bundle_id": bundle_id, "received": len(staged.data), "state": state,
            "results": staged.results}


class _Handler(BaseHTTPRequestHandler):
    state: CountyState
    protocol_version = "HTTP/1.1"  # keep-alive, as the county's uvicorn

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                *, bundle_id: str | None = None, nbytes: int = 0) -> None:
        with self.state.lock:
            self.state.requests.append(Received(self.command, self.path, status, bundle_id,
                                                nbytes))
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            media = "application/json" if status < 300 else "application/problem+json"
            self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: dict[str, Any], bundle_id: str | None) -> None:
        self._answer(status, json.dumps(doc).encode(), bundle_id=bundle_id)

    def _read_body(self) -> bytes:
        """The request body; a body cut short counts its bytes whether the connection ended
        with a FIN (read returns b"") or a reset (the link emulator's cut: read raises)."""
        want, parts, got = int(self.headers.get("Content-Length", "0")), [], 0
        try:
            while got < want:
                part = self.rfile.read1(min(65536, want - got))  # type: ignore[attr-defined]
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except ConnectionError:
            with self.state.lock:
                self.state.requests.append(Received(self.command, self.path, 0,
                                                    self.path.rstrip("/").split("/")[-1], got))
            raise
        return b"".join(parts)

    def _refused(self, bundle_id: str | None, nbytes: int = 0) -> bool:
        """Scripted refusals and the credential check; True if answered."""
        with self.state.lock:
            forced = self.state.scripted.popleft() if self.state.scripted else self.state.always
        if forced is not None and forced != 200:
            self._answer(forced, _problem(forced, "scripted refusal"), bundle_id=bundle_id,
                         nbytes=nbytes)
            return True
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, _problem(401, "unknown site"), bundle_id=bundle_id, nbytes=nbytes)
            return True
        return False

    def _route(self) -> tuple[str | None, str]:
        """(bundle_id, action) from the path; action '' for the collection itself."""
        if not self.path.startswith(wire.BUNDLES_PATH):
            return None, "unknown"
        rest = self.path[len(wire.BUNDLES_PATH):].strip("/").split("/")
        if rest == [""]:
            return None, ""
        return rest[0], "/".join(rest[1:])

    def do_POST(self) -> None:
        body = self._read_body()
        bundle_id, action = self._route()
        if action == "unknown" or self._refused(bundle_id):
            if action == "unknown":
                self._answer(404, _problem(404, "not found"))
            return
        if bundle_id is None:
            self._create(json.loads(body))
        elif action == "complete":
            self._complete(bundle_id)
        else:
            self._answer(404, _problem(404, "not found"))

    def _create(self, meta: dict[str, Any]) -> None:
        bundle_id = str(meta["bundle_id"])
        with self.state.lock:
            staged = self.state.bundles.setdefault(bundle_id, Staged(meta))
        if (staged.meta["size"], staged.meta["sha256"]) != (meta["size"], meta["sha256"]):
            self._answer(409, _problem(409, "bundle id clash"), bundle_id=bundle_id)
            return
        self._json(200, _progress(bundle_id, staged), bundle_id)

    def do_GET(self) -> None:
        bundle_id, _ = self._route()
        if self._refused(bundle_id):
            return
        staged = self.state.bundles.get(bundle_id or "")
        if staged is None:
            self._answer(404, _problem(404, "unknown bundle"), bundle_id=bundle_id)
            return
        self._json(200, _progress(str(bundle_id), staged), bundle_id)

    def do_PATCH(self) -> None:
        bundle_id, _ = self._route()
        self.state._gate()
        body = self._read_body()
        if self._refused(bundle_id, len(body)):
            return
        if self.state.chunk_delay_s:
            time.sleep(self.state.chunk_delay_s)
        staged = self.state.bundles.get(bundle_id or "")
        if staged is None:
            self._answer(404, _problem(404, "unknown bundle"), bundle_id=bundle_id,
                         nbytes=len(body))
            return
        if len(body) < int(self.headers.get("Content-Length", "0")):
            self._answer(400, b"", bundle_id=bundle_id, nbytes=len(body))  # cut: keep nothing
            return
        self._append(str(bundle_id), staged, body)

    def _append(self, bundle_id: str, staged: Staged, body: bytes) -> None:
        with self.state.lock:
            offset = int(self.headers.get(wire.HEADER_UPLOAD_OFFSET, "-1"))
            held = len(staged.data)
            if offset == held and held + len(body) <= int(staged.meta["size"]):
                staged.data += body
                held = len(staged.data)
                status = 204
            else:
                status = 409
        self._answer(status, b"", {wire.HEADER_UPLOAD_OFFSET: str(held)}, bundle_id=bundle_id,
                     nbytes=len(body))

    def _complete(self, bundle_id: str) -> None:
        staged = self.state.bundles.get(bundle_id)
        if staged is None:
            self._answer(404, _problem(404, "unknown bundle"), bundle_id=bundle_id)
            return
        with self.state.lock:
            forced = self.state.complete_scripted.popleft() if self.state.complete_scripted else None
        if forced == 422 or (staged.results is None and not self._verify(staged)):
            with self.state.lock:
                self.state.bundles.pop(bundle_id, None)  # staged chunks discarded
            self._answer(422, _problem(422, "bundle does not verify"), bundle_id=bundle_id)
            return
        if staged.results is None:
            staged.results = self._ingest(staged)
        self._json(200, {"bundle_id": bundle_id, "state": "complete",
                         "results": staged.results}, bundle_id)

    def _verify(self, staged: Staged) -> bool:
        meta = staged.meta
        return (len(staged.data) == meta["size"]
                and hashlib.sha256(staged.data).hexdigest() == meta["sha256"])

    def _ingest(self, staged: Staged) -> list[dict[str, str]]:
        try:
            frames = decode_bundle(bytes(staged.data), encoding=staged.meta["encoding"])
        except BundleError:
            return []
        results = []
        with self.state.lock:
            for header, data in frames:
                key = (header.sop_uid, header.sha256)
                outcome = "duplicate" if key in self.state.stored else "stored"
                self.state.stored[key] = data
                if outcome == "stored":
                    self.state.arrivals.append(header.sop_uid)
                results.append({"sop_uid": header.sop_uid, "sha256": header.sha256,
                                "outcome": outcome})
        return results


class _QuietServer(ThreadingHTTPServer):
    """Connections the link (or a test) cuts are expected here: no traceback for them."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class StandInCounty:
    """Runs the stand-in on a free loopback port until ``close()``."""

    def __init__(self) -> None:
        self.state = CountyState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

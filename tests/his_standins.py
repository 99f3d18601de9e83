"""The hospital's HIS as the relay meets it, for tests: an MLLP receiver of ORU^R01 and a FHIR
server taking DiagnosticReports. Real sockets on 127.0.0.1; they record what arrives, bytes
as sent. A stand-in because no HIS runs here; the framing and the ACK are HL7's (v2.5.1
Appendix C, MLLP; 2.9 original-mode acknowledgement), parsed without the relay's code.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

START, END = b"\x0b", b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    return START + message + END


def segments(message: bytes) -> list[list[bytes]]:
    """The message's segments, each split into fields (MSH's field 1 is the separator)."""
    out = []
    for seg in message.replace(b"\n", b"\r").split(b"\r"):
        if seg:
            fields = seg.split(b"|")
            if fields[0] == b"MSH":
                fields.insert(1, b"|")
            out.append(fields)
    return out


def field(message: bytes, segment: str, number: int, occurrence: int = 0) -> bytes:
    """``SEG-number`` of the ``occurrence``-th such segment (b"" if absent)."""
    found = [s for s in segments(message) if s[0] == segment.encode()]
    if len(found) <= occurrence or len(found[occurrence]) <= number:
        return b""
    return found[occurrence][number]


def ack_for(message: bytes, code: str = "AA") -> bytes:
    """An original-mode ACK to ``message`` (MSA-2 = its MSH-10), in ASCII."""
    control_id = field(message, "MSH", 10)
    return (b"MSH|^~\\&|HIS|COUNTY|RELAY|COUNTY|20261207120000||ACK|ACK" + control_id + b"|P|2.5\r"
            + b"MSA|" + code.encode() + b"|" + control_id + b"\r")


def read_frame(sock: socket.socket, *, limit: int = 64 * 1024 * 1024) -> bytes | None:
    """One MLLP frame's payload from ``sock``; None at end of stream."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
        start = buf.find(START)
        end = buf.find(END, start + 1)
        if start >= 0 and end > start:
            return buf[start + 1:end]
        if len(buf) > limit:
            raise ValueError("MLLP frame over the limit")


def send_mllp(port: int, message: bytes, *, timeout: float = 30.0) -> bytes:
    """Send one framed message to an MLLP listener on 127.0.0.1 and return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame(message))
        answer = read_frame(sock)
    if answer is None:
        raise ConnectionError("the MLLP listener closed without an answer")
    return answer


class MllpReceiver:
    """An HIS's MLLP inbound port: records each message and answers with ``answer`` (AA by
    default; "AE"/"AR" for a NAK; None to stay silent and keep the connection open)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[bytes] = []
        self.answer: str | None = "AA"
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(120)
                try:
                    while (message := read_frame(sock)) is not None:
                        with outer._lock:
                            outer._messages.append(message)
                            code = outer.answer
                        if code is not None:
                            sock.sendall(frame(ack_for(message, code)))
                except (OSError, ValueError):
                    return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="his-mllp", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages(self, *, message_type: str | None = None) -> list[bytes]:
        with self._lock:
            got = list(self._messages)
        return [m for m in got if message_type is None or field(m, "MSH", 9).startswith(message_type.encode())]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class FhirRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FhirReceiver:
    """An HIS's FHIR endpoint: records each PUT/POST of a resource and answers ``status``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[FhirRequest] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _take(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                with outer._lock:
                    outer._requests.append(FhirRequest(self.command, self.path, dict(self.headers.items()), body))
                    status = outer.status
                answer = json.dumps(body if status < 300 else {"resourceType": "OperationOutcome"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = _take  # noqa: N815 - http.server's naming
            do_POST = _take  # noqa: N815

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="his-fhir", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def requests(self, resource_type: str | None = None) -> list[FhirRequest]:
        with self._lock:
            got = list(self._requests)
        return [r for r in got if resource_type is None or r.body.get("resourceType") == resource_type]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

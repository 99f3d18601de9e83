"""The MLLP listener the HIS sends HL7 v2 orders and ADT to (`relay mllp`).

MLLP frames each message as 0x0B <message> 0x1C 0x0D; the HIS may send several on one
connection, each answered with its ACK before the next is read. A frame larger than the
cap is answered AR and the connection closed (a stream without an end block must not fill
memory); a silent connection is closed after the idle timeout.

One process runs this listener: the HIS connects to one host and port, and two listeners
cannot share it. That is why it is its own command and not part of the API processes, of
which several may run behind the proxy. Standard library threads, one per connection.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from relay.county.orders import hl7
from relay.county.orders.inbound import receive

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\x0d"
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    sessions: sessionmaker[Session]
    zone: ZoneInfo
    max_frame_bytes: int
    idle_seconds: float


def frame(message: bytes) -> bytes:
    return START + message + END


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (RELAY_HIS_MLLP_BIND) as a socket address."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"RELAY_HIS_MLLP_BIND {bind!r} is not host:port")
    return host.strip("[]"), int(port)


class _Connection(socketserver.BaseRequestHandler):
    server: "MllpServer"

    def handle(self) -> None:
        sock: socket.socket = self.request
        config = self.server.config
        sock.settimeout(config.idle_seconds)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        buffer = b""
        while not self.server.stopping.is_set():
            start = buffer.find(START)
            end = buffer.find(END, start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0:
                message, buffer = buffer[start + 1:end], buffer[end + len(END):]
                if len(message) > config.max_frame_bytes:
                    self._oversize(sock, message, peer)
                    return
                sock.sendall(frame(self._answer(message)))
                continue
            if start < 0:
                buffer = b""  # bytes outside a frame carry nothing
            elif len(buffer) - start > config.max_frame_bytes:
                self._oversize(sock, buffer[start + 1:], peer)
                return
            try:
                chunk = sock.recv(READ_SIZE)
            except TimeoutError:
                log.info("mllp connection from %s idle for %gs: closed", peer, config.idle_seconds)
                return
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk

    def _answer(self, message: bytes) -> bytes:
        config = self.server.config
        try:
            return receive(sessions=config.sessions, raw=message, zone=config.zone).ack
        except Exception as exc:  # never leave the HIS without an answer
            header = hl7.sniff_header(message[:4096])
            log.error("mllp message %s: %s while answering", header.control_id or "-", type(exc).__name__)
            return hl7.build_ack(header, "AE", nak=hl7.Nak("AE", "internal error; send it again",
                                                            error=hl7.APPLICATION_INTERNAL_ERROR))

    def _oversize(self, sock: socket.socket, partial: bytes, peer: str) -> None:
        header = hl7.sniff_header(partial[:4096])
        cap = self.server.config.max_frame_bytes
        nak = hl7.Nak("AR", f"message larger than {cap} bytes (RELAY_HIS_MLLP_MAX_FRAME_BYTES); "
                      "connection closed", error=hl7.APPLICATION_INTERNAL_ERROR)
        log.warning("mllp frame from %s over %d bytes (message %s from %s): AR, connection closed", peer, cap,
                    header.control_id or "-", header.sending_facility or "-")
        try:
            sock.sendall(frame(hl7.build_ack(header, "AR", nak=nak)))
        except OSError:
            pass


class MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: ListenerConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def serve(*, config: ListenerConfig, host: str, port: int, stop: threading.Event,
          ready: threading.Event | None = None, bound: list[int] | None = None) -> None:
    """Listen until ``stop`` is set; ``bound`` receives the port (0 = any free one)."""
    with MllpServer((host, port), config) as server:
        if bound is not None:
            bound.append(server.port)
        log.info("mllp listening on %s:%d", host, server.port)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="mllp-accept", daemon=True)
        thread.start()
        if ready is not None:
            ready.set()
        stop.wait()
        server.stopping.set()
        server.shutdown()
        thread.join(timeout=10)
    log.info("mllp listener stopped")

"""Connections beyond the edge's association limit, answered without a thread each.

The acceptor gives a connection its own thread only while fewer than
``max_associations`` run; every other connection comes here: one thread watches
them all with a selector, reads each one's A-ASSOCIATE-RQ (bounded in size and
time), answers A-ASSOCIATE-RJ "transient, local limit exceeded" so a modality knows
to retry later, then waits briefly for the peer to close and closes. A connection
that says nothing, or more than an A-ASSOCIATE-RQ can be, is just closed. So a burst
of connections (a misbehaving device, a port scan) costs sockets, not threads and
their stacks. DICOM TLS connections are closed at once: their handshake is not
worth doing to say no.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ, A_ASSOCIATE_RJ = 0x01, 0x03
RJ_BODY = bytes([0x00, 0x02, 0x03, 0x02])
"""Reserved, result transient (2), source service provider / presentation (3),
reason local limit exceeded (2): PS3.8 9.3.4."""
MAX_RQ_BYTES = 64 * 1024
"""The most of an A-ASSOCIATE-RQ read before refusing (real ones are a few KB)."""
ANSWER_WITHIN_S = 5.0
"""Seconds an over-limit connection has to send its A-ASSOCIATE-RQ and then to close
after the A-ASSOCIATE-RJ; after that it is closed."""
MAX_WAITING = 256
"""Over-limit connections watched at once; more are closed at once (file descriptors
are finite too)."""


@dataclass(slots=True)
class _Waiting:
    sock: socket.socket
    peer: str
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    answered: bool = False


class Overflow:
    """The thread that says no to connections over the limit; ``close()`` ends it."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._new: list[_Waiting] = []
        self._count = 0
        """Connections taken over and not closed yet (under ``_lock``)."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicom-overflow", daemon=True)
        self._thread.start()

    def refuse(self, sock: socket.socket, peer: str, *, plain: bool) -> None:
        """Take over ``sock``: answer A-ASSOCIATE-RJ (plain DICOM) or close it (TLS)."""
        log.warning("connection from peer=%s over the association limit: refusing", peer)
        with self._lock:
            if plain and self._count < MAX_WAITING:
                self._count += 1
                sock.setblocking(False)
                self._new.append(_Waiting(sock, peer, time.monotonic() + ANSWER_WITHIN_S))
                self._wake_w.send(b"\0")
                return
        _close(sock)

    def close(self) -> None:
        self._stopping.set()
        self._wake_w.send(b"\0")
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Waiting):
                _close(key.data.sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                if key.data is None:
                    self._take_new()
                else:
                    self._readable(key.data)
            self._expire()

    def _take_new(self) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        with self._lock:
            new, self._new = self._new, []
        for waiting in new:
            self._selector.register(waiting.sock, selectors.EVENT_READ, waiting)

    def _readable(self, waiting: _Waiting) -> None:
        try:
            chunk = waiting.sock.recv(MAX_RQ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(waiting)
            return
        if waiting.answered:
            return  # whatever follows the RQ is discarded until the peer closes
        waiting.data += chunk
        if len(waiting.data) < 6:
            return
        kind, _, length = struct.unpack_from(">BBI", waiting.data)
        if kind != A_ASSOCIATE_RQ or length + 6 > MAX_RQ_BYTES:
            self._drop(waiting)
        elif len(waiting.data) >= length + 6:
            self._answer(waiting)

    def _answer(self, waiting: _Waiting) -> None:
        rj = struct.pack(">BBI", A_ASSOCIATE_RJ, 0, len(RJ_BODY)) + RJ_BODY
        try:
            waiting.sock.send(rj)  # 10 bytes into an empty send buffer: never partial
            waiting.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(waiting)
            return
        waiting.answered, waiting.data = True, bytearray()
        waiting.deadline = time.monotonic() + ANSWER_WITHIN_S

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Waiting) and key.data.deadline < now:
                self._drop(key.data)

    def _drop(self, waiting: _Waiting) -> None:
        try:
            self._selector.unregister(waiting.sock)
        except (KeyError, ValueError):
            pass
        _close(waiting.sock)
        with self._lock:
            self._count -= 1


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass

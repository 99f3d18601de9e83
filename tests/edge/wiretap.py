"""A recording TCP relay between a sender and the edge, so a test can compare what the
edge spooled with what really travelled: senders re-encode what they read from a file
(DCMTK pads a deflated stream to even length, for one), so "exactly as sent" is checked
against the wire, not only against the file.

``WireTap(edge_port)`` listens on a free loopback port; every connection to it is
relayed to the edge and the bytes the sender sent are kept. ``stores()`` reassembles
them (PS3.8 PDUs, PDV fragments) into one ``WireStore`` per C-STORE-RQ.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType

from relay.edge.pdu_codec import P_DATA_TF, ascii_text, decode_command, iter_pdvs, us_value

RELAY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WireStore:
    sop_instance_uid: str
    context_id: int
    dataset: bytes
    """The dataset bytes as they travelled (fragments joined)."""


class WireTap:
    def __init__(self, edge_port: int, *, edge_host: str = "127.0.0.1") -> None:
        self.edge = (edge_host, edge_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._streams: list[bytearray] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> WireTap:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(RELAY_TIMEOUT_S)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            recorded = bytearray()
            with self._lock:
                self._streams.append(recorded)
            thread = threading.Thread(target=self._relay, args=(client, recorded), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket, recorded: bytearray) -> None:
        client.settimeout(RELAY_TIMEOUT_S)
        try:
            server = socket.create_connection(self.edge, timeout=RELAY_TIMEOUT_S)
        except OSError:
            client.close()
            return
        back = threading.Thread(target=_pump, args=(server, client, None), daemon=True)
        back.start()
        _pump(client, server, recorded)
        back.join(RELAY_TIMEOUT_S)
        client.close()
        server.close()

    def streams(self) -> list[bytes]:
        """What each sender sent, connection by connection."""
        with self._lock:
            return [bytes(s) for s in self._streams]

    def stores(self) -> list[WireStore]:
        """Every C-STORE-RQ whose dataset travelled whole, in order."""
        return [store for stream in self.streams() for store in _stores(stream)]


def _pump(source: socket.socket, sink: socket.socket, recorded: bytearray | None) -> None:
    try:
        while chunk := source.recv(1 << 16):
            if recorded is not None:
                recorded += chunk
            sink.sendall(chunk)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _stores(stream: bytes) -> list[WireStore]:
    out: list[WireStore] = []
    command, dataset = bytearray(), bytearray()
    current: tuple[str, int] | None = None
    offset = 0
    while offset + 6 <= len(stream):
        kind, length = stream[offset], int.from_bytes(stream[offset + 2:offset + 6], "big")
        body = stream[offset + 6:offset + 6 + length]
        offset += 6 + length
        if kind != P_DATA_TF or len(body) < length:
            continue
        for context_id, control, fragment in iter_pdvs(body):
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    fields = decode_command(bytes(command))
                    command = bytearray()
                    if us_value(fields.get(0x0100)) == 0x0001:
                        current = (ascii_text(fields.get(0x1000)), context_id)
            elif current is not None:
                dataset += fragment
                if control & 0x02:
                    out.append(WireStore(current[0], current[1], bytes(dataset)))
                    dataset, current = bytearray(), None
    return out

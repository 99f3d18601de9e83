"""The link emulator over real sockets on 127.0.0.1: cap, delay, faults, integrity.

The benchmarks and the WAN tests trust this proxy to behave like a township link, so
its cap and delay are checked here with margins wide enough for a shared 2-core box.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bench.linkemu import LinkEmulator, parse_delay, parse_rate

IO_TIMEOUT_S = 20.0
"""Seconds any socket operation in these tests may block before the test fails."""

SERVER_LIFETIME_S = 60.0
"""Upper bound on a test server's accept loop, in case a test forgets to stop it."""


@dataclass
class Received:
    """What a sink connection has seen so far; written by its handler thread."""

    nbytes: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    t_first: float | None = None
    t_last: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Server:
    """A threaded TCP server: ``sink`` reads to EOF and answers the SHA-256 of what it
    read; ``echo`` sends every byte back and closes after the client's EOF."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[Received] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept_loop(self) -> None:
        deadline = time.monotonic() + SERVER_LIFETIME_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(IO_TIMEOUT_S)
            target = self._sink if self.mode == "sink" else self._echo
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _sink(self, conn: socket.socket) -> None:
        rec = Received()
        self.received.append(rec)
        with conn:
            try:
                while data := conn.recv(65536):
                    now = time.monotonic()
                    rec.t_first = rec.t_first or now
                    rec.t_last = now
                    rec.nbytes += len(data)
                    rec.digest.update(data)
                conn.sendall(rec.digest.hexdigest().encode())
            except OSError:
                pass
            finally:
                rec.done.set()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


@pytest.fixture
def sink() -> Iterator[Server]:
    with Server("sink") as server:
        yield server


@pytest.fixture
def echo() -> Iterator[Server]:
    with Server("echo") as server:
        yield server


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_all_and_read_reply(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything the server answers."""
    with connect(port) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def read_to_eof(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit and (data := sock.recv(65536)):
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def peer_closed(sock: socket.socket, timeout_s: float = 3.0) -> bool:
    """True if the peer closes (EOF or RST) within ``timeout_s``; data before that is skipped."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def refused_or_closed(port: int) -> bool:
    """True if a new connection is refused or reset at connect, or closed right after.

    A down link resets accepted connections at once; on loopback the RST can beat
    ``connect()``'s return, so a reset during connect counts too.
    """
    try:
        sock = connect(port)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    with sock:
        return peer_closed(sock)


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def sink_rate_bps(records: list[Received]) -> float:
    """Bits per second the sink saw over all connections, first byte to last byte."""
    first = min(r.t_first for r in records if r.t_first is not None)
    last = max(r.t_last for r in records if r.t_last is not None)
    return sum(r.nbytes for r in records) * 8 / (last - first)


def test_long_transfer_converges_to_the_cap(sink: Server) -> None:
    rate = 8e6
    payload = os.urandom(4_000_000)
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=rate, delay_s=0.02) as link:
        reply = send_all_and_read_reply(link.listen_port, payload)
        stats = link.stats()
    assert reply.decode() == hashlib.sha256(payload).hexdigest()
    measured = sink_rate_bps(sink.received)
    assert 0.8 * rate <= measured <= 1.1 * rate, f"{measured / 1e6:.2f} Mbit/s through 8 Mbit/s"
    assert stats.bytes_up == len(payload)
    assert stats.connections_accepted == 1


def test_parallel_connections_share_the_cap(sink: Server) -> None:
    rate = 8e6
    payloads = [os.urandom(1_000_000) for _ in range(2)]
    replies: list[bytes] = []
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=rate, delay_s=0.02) as link:
        threads = [threading.Thread(
            target=lambda p=p: replies.append(send_all_and_read_reply(link.listen_port, p)))
            for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT_S)
    assert len(replies) == 2
    measured = sink_rate_bps(sink.received)
    assert 0.8 * rate <= measured <= 1.1 * rate, f"{measured / 1e6:.2f} Mbit/s summed"


def test_round_trip_takes_twice_the_one_way_delay(echo: Server) -> None:
    delay = 0.1
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=8e6, delay_s=delay) as link:
        with connect(link.listen_port) as sock:
            rtts = []
            for _ in range(3):
                start = time.monotonic()
                sock.sendall(b"ping")
                assert sock.recv(16) == b"ping"
                rtts.append(time.monotonic() - start)
    assert min(rtts) >= 2 * delay
    assert max(rtts) < 2 * delay + 0.1, rtts


def test_cut_resets_open_connections_and_new_ones_work(echo: Server) -> None:
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.01) as link:
        with connect(link.listen_port) as sock:
            sock.sendall(b"hello")
            assert sock.recv(16) == b"hello"
            link.cut()
            assert peer_closed(sock)
        with connect(link.listen_port) as sock:
            sock.sendall(b"again")
            assert sock.recv(16) == b"again"
        assert link.stats().cuts == 1


def test_down_kills_connections_until_up(echo: Server) -> None:
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.01) as link:
        with connect(link.listen_port) as before:
            before.sendall(b"x")
            assert before.recv(16) == b"x"
            link.down()
            assert peer_closed(before)
        assert refused_or_closed(link.listen_port)
        link.up()
        with connect(link.listen_port) as after:
            after.sendall(b"y")
            assert after.recv(16) == b"y"
        stats = link.stats()
    assert stats.connections_refused == 1
    assert stats.connections_accepted == 2


def test_stall_holds_bytes_and_unstall_delivers_them_in_order(sink: Server) -> None:
    payload = os.urandom(2_000_000)
    replies: list[bytes] = []
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=8e6, delay_s=0.02) as link:
        sender = threading.Thread(
            target=lambda: replies.append(send_all_and_read_reply(link.listen_port, payload)))
        sender.start()
        assert wait_until(lambda: sink.received and sink.received[0].nbytes > 300_000, 5)
        link.stall()
        time.sleep(0.3)  # let bytes already handed to the kernel reach the sink
        held_at = sink.received[0].nbytes
        time.sleep(0.5)
        assert sink.received[0].nbytes == held_at, "bytes flowed through a stalled link"
        assert held_at < len(payload)
        link.unstall()
        sender.join(IO_TIMEOUT_S)
    assert replies == [hashlib.sha256(payload).hexdigest().encode()]


def test_payload_is_byte_exact_with_delay_and_cap(echo: Server) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=20e6, delay_s=0.03) as link:
        with connect(link.listen_port) as sock:
            sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                      sock.shutdown(socket.SHUT_WR)))
            sender.start()
            echoed = read_to_eof(sock)
            sender.join(IO_TIMEOUT_S)
        stats = link.stats()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert stats.bytes_up == stats.bytes_down == len(payload)


def test_flap_refuses_during_down_windows_and_ends(echo: Server) -> None:
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.0) as link:
        done = link.flap(period_s=0.4, down_s=0.2, count=2)
        time.sleep(0.05)
        assert refused_or_closed(link.listen_port)
        done.result(timeout=5)
        with connect(link.listen_port) as after:
            after.sendall(b"z")
            assert after.recv(16) == b"z"
        assert link.stats().connections_refused >= 1


def test_stop_is_bounded_with_a_stalled_connection(echo: Server) -> None:
    link = LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.0)
    link.start()
    with connect(link.listen_port) as sock:
        link.stall()
        sock.sendall(b"lost in the black hole")
        start = time.monotonic()
        link.stop()
        assert time.monotonic() - start < 2
        assert peer_closed(sock)


@pytest.mark.parametrize(("text", "bps"), [("20mbit", 20e6), ("512kbit", 512e3),
                                           ("1gbit", 1e9), ("9600", 9600.0), ("none", None)])
def test_parse_rate(text: str, bps: float | None) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(("text", "seconds"), [("50ms", 0.05), ("0.2s", 0.2), ("1", 1.0)])
def test_parse_delay(text: str, seconds: float) -> None:
    assert parse_delay(text) == pytest.approx(seconds)

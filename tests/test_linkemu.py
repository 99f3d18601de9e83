"""The link emulator over real sockets on 127.0.0.1: cap, delay, faults, integrity.

The benchmarks and the WAN tests trust this proxy to behave like a township link. The
tests check order and outcome (every byte delivered, in order; faults refuse, reset and
recover; the proxy stops); how close it keeps the cap and the delay is measured by
``python -m bench.link_check``, since a timing assertion fails on a loaded machine.
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


def peer_closed(sock: socket.socket, timeout_s: float = IO_TIMEOUT_S) -> bool:
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


def answers(port: int) -> bool:
    """True if a ping through the link comes back; False if it is refused or reset."""
    try:
        with connect(port) as sock:
            sock.sendall(b"p")
            return sock.recv(16) == b"p"
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return False


def test_long_transfer_through_the_cap_is_byte_exact(sink: Server) -> None:
    payload = os.urandom(4_000_000)
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=8e6, delay_s=0.02) as link:
        reply = send_all_and_read_reply(link.listen_port, payload)
        stats = link.stats()
    assert reply.decode() == hashlib.sha256(payload).hexdigest()
    assert stats.bytes_up == len(payload)
    assert stats.connections_accepted == 1


def test_parallel_connections_share_the_cap_and_each_arrives_whole(sink: Server) -> None:
    payloads = [os.urandom(1_000_000) for _ in range(2)]
    replies: dict[int, bytes] = {}
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=8e6, delay_s=0.02) as link:
        threads = [threading.Thread(target=lambda n=n, p=p: replies.__setitem__(
            n, send_all_and_read_reply(link.listen_port, p))) for n, p in enumerate(payloads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT_S)
        stats = link.stats()
    assert replies == {n: hashlib.sha256(p).hexdigest().encode()
                       for n, p in enumerate(payloads)}
    assert stats.bytes_up == sum(map(len, payloads))
    assert stats.connections_accepted == 2


def test_round_trips_come_back_in_order_and_never_before_the_delay(echo: Server) -> None:
    """Load can only make a round trip longer, so the lower bound is safe; the upper
    bound (how close to 2 x delay) is measured by bench.link_check."""
    delay = 0.1
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=8e6, delay_s=delay) as link:
        with connect(link.listen_port) as sock:
            rtts = []
            for n in range(3):
                start = time.monotonic()
                sock.sendall(b"ping%d" % n)
                assert sock.recv(16) == b"ping%d" % n
                rtts.append(time.monotonic() - start)
    assert min(rtts) >= 2 * delay


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


def test_stall_holds_every_byte_and_unstall_delivers_them_in_order(sink: Server) -> None:
    """Stalled before the first byte, so nothing may reach the sink however slow the
    machine is; after unstall the sink's digest proves every byte came, in order."""
    payload = os.urandom(2_000_000)
    replies: list[bytes] = []
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=8e6, delay_s=0.02) as link:
        link.stall()
        sender = threading.Thread(
            target=lambda: replies.append(send_all_and_read_reply(link.listen_port, payload)))
        sender.start()
        time.sleep(0.5)  # a window for a leak to show; load only makes it show less
        assert sum(r.nbytes for r in sink.received) == 0, "bytes flowed through a stalled link"
        assert link.stats().bytes_up == 0
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
    """Pings run back to back while the link flaps: some are refused (long down windows,
    so a slow test thread still lands in one), and once the flap is over they answer."""
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.0) as link:
        done = link.flap(period_s=1.0, down_s=0.8, count=2)
        outcomes = []
        while not done.done():
            outcomes.append(answers(link.listen_port))
        done.result(timeout=IO_TIMEOUT_S)
        assert answers(link.listen_port)
        refused = link.stats().connections_refused
    assert False in outcomes
    assert refused >= 1


def test_stop_ends_a_stalled_connection_and_the_listener(echo: Server) -> None:
    link = LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.0)
    port = link.start()
    with connect(port) as sock:
        link.stall()
        sock.sendall(b"lost in the black hole")
        stopper = threading.Thread(target=link.stop, daemon=True)
        stopper.start()
        stopper.join(IO_TIMEOUT_S)
        assert not stopper.is_alive(), "stop() hung on a stalled connection"
        assert peer_closed(sock)
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()


@pytest.mark.parametrize(("text", "bps"), [("20mbit", 20e6), ("512kbit", 512e3),
                                           ("1gbit", 1e9), ("9600", 9600.0), ("none", None)])
def test_parse_rate(text: str, bps: float | None) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(("text", "seconds"), [("50ms", 0.05), ("0.2s", 0.2), ("1", 1.0)])
def test_parse_delay(text: str, seconds: float) -> None:
    assert parse_delay(text) == pytest.approx(seconds)

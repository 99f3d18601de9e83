"""How closely bench.linkemu and the edge's TokenBucket keep the rate and delay they
are given: the figures tests/test_linkemu.py and tests/edge/test_wan_transfer.py used
to assert (a timing assertion fails on a loaded machine, so the tests now check order
and outcome and the rates are measured here).

    .venv/bin/python -m bench.link_check            # 8 Mbit/s, 20 ms and 100 ms delay

Rows: one long transfer through the cap, two parallel ones sharing it (sink side, first
byte to last), the round trip through a 100 ms one-way delay, how long ``stop()`` takes
with a stalled connection open, and the edge's TokenBucket shared by two threads.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time

from bench.linkemu import LinkEmulator
from relay.edge.ratelimit import TokenBucket

IO_TIMEOUT_S = 60.0


class _Sink:
    """Reads every connection to EOF; records bytes and first/last arrival."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.lock = threading.Lock()
        self.nbytes = 0
        self.first: float | None = None
        self.last: float | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IO_TIMEOUT_S)
            while data := conn.recv(65536):
                now = time.monotonic()
                with self.lock:
                    self.first = self.first or now
                    self.last = now
                    self.nbytes += len(data)
            conn.sendall(b"ok")

    def rate_bps(self) -> float:
        assert self.first is not None and self.last is not None
        return self.nbytes * 8 / (self.last - self.first)


class _Echo:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


def _send(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(64):
            pass


def through_cap(rate: float, streams: int, nbytes: int) -> float:
    """Measured / configured rate for ``streams`` parallel transfers of ``nbytes`` each."""
    sink = _Sink()
    with LinkEmulator("127.0.0.1", sink.port, rate_bps=rate, delay_s=0.02) as link:
        threads = [threading.Thread(target=_send, args=(link.listen_port, os.urandom(nbytes)))
                   for _ in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT_S)
    sink.sock.close()
    return sink.rate_bps() / rate


def round_trips(delay: float, count: int = 5) -> list[float]:
    echo = _Echo()
    rtts = []
    with LinkEmulator("127.0.0.1", echo.port, rate_bps=8e6, delay_s=delay) as link:
        with socket.create_connection(("127.0.0.1", link.listen_port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                start = time.monotonic()
                sock.sendall(b"ping")
                sock.recv(16)
                rtts.append(time.monotonic() - start)
    echo.sock.close()
    return rtts


def stop_with_stalled_connection() -> float:
    echo = _Echo()
    link = LinkEmulator("127.0.0.1", echo.port, rate_bps=None, delay_s=0.0)
    link.start()
    with socket.create_connection(("127.0.0.1", link.listen_port)) as sock:
        link.stall()
        sock.sendall(b"lost in the black hole")
        start = time.monotonic()
        link.stop()
        took = time.monotonic() - start
    echo.sock.close()
    return took


def bucket_two_threads(rate: float, nbytes: int) -> float:
    """Measured / configured rate of the edge's TokenBucket taken by two threads."""
    bucket = TokenBucket(rate)
    block = 64 * 1024

    def take() -> None:
        for _ in range(nbytes // block):
            bucket.take(block)

    start = time.monotonic()
    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return (bucket.taken - bucket.capacity) * 8 / elapsed / rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.link_check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=8e6, help="bit/s (default 8e6)")
    parser.add_argument("--delay", type=float, default=0.1,
                        help="one-way delay for the round-trip row, s (default 0.1)")
    args = parser.parse_args(argv)
    print(f"one transfer of 4 MB through {args.rate / 1e6:g} Mbit/s: "
          f"{through_cap(args.rate, 1, 4_000_000):.3f} x the cap (target 0.8-1.1)")
    print(f"two parallel 1 MB transfers: {through_cap(args.rate, 2, 1_000_000):.3f} x the cap "
          "(target 0.8-1.1)")
    rtts = round_trips(args.delay)
    print(f"round trip through {args.delay * 1e3:g} ms each way: min {min(rtts) * 1e3:.1f} ms, "
          f"max {max(rtts) * 1e3:.1f} ms (target 2x delay, + < 100 ms)")
    print(f"stop() with a stalled connection: {stop_with_stalled_connection():.3f} s "
          "(target < 2 s)")
    print(f"edge TokenBucket, two threads, 2 MB each: "
          f"{bucket_two_threads(args.rate, 2 * 1024 * 1024):.3f} x the cap (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A township WAN link on 127.0.0.1: a TCP proxy with a bandwidth cap, latency and faults.

This kernel has no netem, so the tests and the benchmarks put this proxy between an
edge agent and the county store. It models one access link:

* **Bandwidth.** One token bucket per direction, shared by every connection through
  the proxy, like the single 2-20 Mbit/s line of a township clinic. The bucket keeps a
  virtual clock, ``free_at``: the time the link finishes sending what is already
  queued on it. A chunk of ``n`` bytes read at ``t`` finishes at
  ``max(free_at, t - burst) + n / rate``; the burst lets an idle link send a little
  at once, as a real token bucket does.
* **Latency.** A delay line, not a sleep per read: each chunk is stamped when read and
  released to the far side at ``max(finish, read_time) + delay_s``, so many chunks are
  in flight at once and a long transfer still fills the pipe (a sleep per read would
  cap throughput at one read per delay). The upstream connect is also delayed by
  ``delay_s`` (the SYN crossing the link), so a server-speaks-first greeting reaches
  the client one RTT after connect.
* **Backpressure.** The proxy stops reading from a source while the shared link has
  more than ``queue_bytes`` waiting to be sent (a router queue), or while one
  connection has more than ``queue_bytes`` plus the bandwidth-delay product in flight.
  TCP flow control then pushes back on the sender, as it would on a real link.
* **Faults on command**, callable from any thread: :meth:`LinkEmulator.cut`,
  :meth:`~LinkEmulator.down` / :meth:`~LinkEmulator.up`,
  :meth:`~LinkEmulator.stall` / :meth:`~LinkEmulator.unstall` and
  :meth:`~LinkEmulator.flap`.

The proxy runs an asyncio loop in a daemon thread; every public method is thread-safe.

    .venv/bin/python -m bench.linkemu --listen 127.0.0.1:9000 \\
        --upstream 127.0.0.1:8000 --rate 20mbit --delay 50ms
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import re
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("bench.linkemu")

T = TypeVar("T")

CHUNK_BYTES = 16 * 1024
"""Bytes per read from a source (default 16 KiB). Small enough that two connections
interleave finely on the shared bucket (16 KiB is 16 ms at 8 Mbit/s), large enough that
an uncapped loopback proxy is not bound by per-chunk overhead."""

DEFAULT_BURST_BYTES = 32 * 1024
"""Token bucket depth per direction (default 32 KiB). A long transfer converges to the
cap within burst/size, i.e. under 1 % for 4 MB."""

DEFAULT_QUEUE_BYTES = 256 * 1024
"""Router queue per direction (default 256 KiB): bytes allowed to wait for the link
before the proxy stops reading. 256 KiB is ~0.26 s at 8 Mbit/s: a typical buffered DSL
or 4G uplink. Larger means more bufferbloat, smaller means TCP sees backpressure sooner."""

UNCAPPED_BDP_BYTES = 4 * 1024 * 1024
"""Bytes in flight per connection and direction added on top of the queue when there is
no rate cap (default 4 MiB), so a delay-only link still carries ~80 MB/s at 50 ms."""

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for the upstream to accept (default 10): a dead upstream resets the
client instead of leaving it hanging forever."""

COMMAND_TIMEOUT_S = 5.0
"""Seconds a thread-safe command waits for the proxy's loop (default 5)."""

STOP_TIMEOUT_S = 5.0
"""Seconds :meth:`LinkEmulator.stop` waits for the loop thread to end (default 5)."""

_LINGER_RST = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: close() then sends RST instead of FIN."""


@dataclass(frozen=True)
class LinkStats:
    """Counters since :meth:`LinkEmulator.start`.

    ``bytes_up`` flows client -> upstream (township -> county), ``bytes_down`` the
    other way; both count bytes handed to the destination socket.
    """

    bytes_up: int
    bytes_down: int
    connections_accepted: int
    connections_refused: int
    cuts: int


class _Bucket:
    """The shared serialisation clock of one direction of the link.

    Not a token counter but its equivalent virtual clock: ``free_at`` is when the link
    finishes sending everything reserved so far. Only touched from the loop thread.
    """

    def __init__(self, rate_bps: float | None, burst_bytes: int) -> None:
        self.bytes_per_s = rate_bps / 8.0 if rate_bps else None
        self.burst_s = burst_bytes / self.bytes_per_s if self.bytes_per_s else 0.0
        self.free_at = 0.0

    def reserve(self, nbytes: int, now: float) -> float:
        """Book ``nbytes`` on the link at ``now``; return when they finish being sent."""
        if self.bytes_per_s is None:
            return now
        start = max(self.free_at, now - self.burst_s)
        self.free_at = start + nbytes / self.bytes_per_s
        return max(self.free_at, now)

    def backlog_s(self, now: float) -> float:
        """Seconds of data already waiting for the link (0 when idle or uncapped)."""
        return max(0.0, self.free_at - now)


class _Pipe:
    """One direction of one connection: read, stamp, hold for the delay, write.

    The reader and writer run as two tasks joined by a queue of
    ``(release_time, chunk)``; ``b""`` is the end-of-stream marker. ``dst`` is a future
    because the client starts sending before the upstream connection exists.
    """

    def __init__(self, emu: LinkEmulator, bucket: _Bucket, src: asyncio.StreamReader,
                 dst: asyncio.Future[asyncio.StreamWriter], direction: str) -> None:
        self.emu = emu
        self.bucket = bucket
        self.src = src
        self.dst = dst
        self.direction = direction
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.inflight = 0
        self.space = asyncio.Event()
        bdp = (bucket.bytes_per_s * emu.delay_s if bucket.bytes_per_s else UNCAPPED_BDP_BYTES)
        self.inflight_limit = emu.queue_bytes + int(bdp)

    async def run(self) -> None:
        """Forward until end of stream; raise OSError if either side fails."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_loop())
            tg.create_task(self._write_loop())

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_room()
            data = await self.src.read(CHUNK_BYTES)
            now = loop.time()
            release = self.bucket.reserve(len(data), now) + self.emu.delay_s
            self.inflight += len(data)
            self.queue.put_nowait((release, data))
            if not data:
                return

    async def _wait_for_room(self) -> None:
        """Block while stalled, the link queue is full, or this pipe has too much in flight."""
        loop = asyncio.get_running_loop()
        while True:
            await self.emu._flowing.wait()
            if self.inflight >= self.inflight_limit:
                self.space.clear()
                await self.space.wait()
                continue
            excess_s = self.bucket.backlog_s(loop.time()) - self.emu.queue_s
            if excess_s > 0:
                await asyncio.sleep(excess_s)
                continue
            return

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        dst = await self.dst
        while True:
            release, data = await self.queue.get()
            wait_s = release - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            await self.emu._flowing.wait()
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()
            self.inflight -= len(data)
            self.space.set()
            self.emu._count(self.direction, len(data))


class _Conn:
    """One proxied connection: the client's and the upstream's transports and its task."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Abort both sides with RST and cancel the forwarding task."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with RST (SO_LINGER 0), not a graceful FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass  # already closed: nothing left to reset
    writer.transport.abort()


class LinkEmulator:
    """A TCP proxy from ``listen_host:listen_port`` to the upstream, shaped like a WAN link.

    ``rate_bps`` caps each direction in bits per second, summed over all connections
    (``None``: no cap). ``delay_s`` is the one-way latency added to each direction, so
    the RTT grows by ``2 * delay_s``. ``burst_bytes`` and ``queue_bytes`` default to
    :data:`DEFAULT_BURST_BYTES` and :data:`DEFAULT_QUEUE_BYTES`.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 rate_bps: float | None, delay_s: float,
                 burst_bytes: int = DEFAULT_BURST_BYTES,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        if rate_bps is not None and rate_bps <= 0:
            raise ValueError(f"rate_bps must be positive or None, got {rate_bps}")
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self.burst_bytes = burst_bytes
        self.queue_bytes = queue_bytes
        self.queue_s = queue_bytes * 8.0 / rate_bps if rate_bps else 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._buckets: dict[str, _Bucket] = {}
        self._flowing: asyncio.Event
        self._down = False
        self._bytes = {"up": 0, "down": 0}
        self._accepted = 0
        self._refused = 0
        self._cuts = 0

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> int:
        """Start the proxy thread and listen; return the bound port."""
        if self._thread is not None:
            raise RuntimeError("LinkEmulator already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="linkemu", daemon=True)
        self._thread.start()
        port = self._call(self._listen)
        self.listen_port = port
        log.info("link %s:%d -> %s:%d rate=%s bit/s delay=%.3f s", self.listen_host, port,
                 self.upstream_host, self.upstream_port, self.rate_bps, self.delay_s)
        return port

    def stop(self) -> None:
        """Close the listener and every connection (RST), then end the thread; bounded."""
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._shutdown)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("link shutdown timed out; stopping the loop anyway")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> LinkEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults ----------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection now, both sides; new connections still work."""
        self._call(self._cut_all)

    def down(self) -> None:
        """Take the link down: cut every connection and reset new ones until :meth:`up`."""
        async def _down() -> None:
            self._down = True
            await self._cut_all()
        self._call(_down)
        log.info("link down")

    def up(self) -> None:
        """Bring the link back after :meth:`down`."""
        async def _up() -> None:
            self._down = False
        self._call(_up)
        log.info("link up")

    def stall(self) -> None:
        """Stop forwarding bytes in both directions; connections stay open and hang."""
        async def _stall() -> None:
            self._flowing.clear()
        self._call(_stall)
        log.info("link stalled")

    def unstall(self) -> None:
        """Resume forwarding after :meth:`stall`; nothing held is lost or reordered.

        What was already in flight when the link stalled (at most the queue plus one
        bandwidth-delay product per connection) is released at once; new data is paced.
        """
        async def _unstall() -> None:
            self._flowing.set()
        self._call(_unstall)
        log.info("link unstalled")

    def flap(self, period_s: float, down_s: float, count: int) -> concurrent.futures.Future[None]:
        """In the background, ``count`` times: go down for ``down_s``, then up until the
        period of ``period_s`` ends. Returns a future that completes after the last up.
        """
        if not 0 < down_s <= period_s:
            raise ValueError(f"need 0 < down_s <= period_s, got {down_s}, {period_s}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        loop = self._require_loop()

        async def _flap() -> None:
            for i in range(count):
                self._down = True
                await self._cut_all()
                log.info("flap %d/%d: down for %.3f s", i + 1, count, down_s)
                try:
                    await asyncio.sleep(down_s)
                finally:
                    self._down = False
                await asyncio.sleep(period_s - down_s)

        return asyncio.run_coroutine_threadsafe(_flap(), loop)

    def stats(self) -> LinkStats:
        """Counters so far, read on the proxy's loop so they are consistent."""
        async def _stats() -> LinkStats:
            return LinkStats(bytes_up=self._bytes["up"], bytes_down=self._bytes["down"],
                             connections_accepted=self._accepted,
                             connections_refused=self._refused, cuts=self._cuts)
        return self._call(_stats)

    # ---- loop side -------------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("LinkEmulator is not running; call start() first")
        return self._loop

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run coroutine function ``fn`` on the proxy's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._require_loop())
        return future.result(COMMAND_TIMEOUT_S)

    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        for direction in ("up", "down"):
            self._buckets[direction] = _Bucket(self.rate_bps, self.burst_bytes)
        self._server = await asyncio.start_server(self._serve, self.listen_host,
                                                  self.listen_port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        """Close the listener, reset every connection and wait (bounded) for every task
        on the loop, flaps included, to unwind, so none is destroyed while pending."""
        if self._server is not None:
            self._server.close()
        await self._cut_all(count=False)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=STOP_TIMEOUT_S / 2)

    async def _cut_all(self, count: bool = True) -> None:
        conns = list(self._conns)
        for conn in conns:
            conn.reset()
        self._conns.clear()
        if count and conns:
            self._cuts += len(conns)
            log.info("cut %d connection(s)", len(conns))
        await asyncio.sleep(0)  # let the cancelled tasks see their cancellation

    def _count(self, direction: str, nbytes: int) -> None:
        self._bytes[direction] += nbytes

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        """Handle one accepted client: refuse it if down, else connect upstream and pump."""
        conn = _Conn(cwriter)
        if self._down:
            self._refused += 1
            conn.reset()
            return
        self._accepted += 1
        conn.task = asyncio.current_task()
        self._conns.add(conn)
        try:
            try:
                await self._pump(conn, creader)
            except* OSError as group:  # resets, refused upstream, connect timeout
                log.debug("connection ended with %r", group.exceptions[0])
                conn.reset()
        except asyncio.CancelledError:
            pass  # cut, down or stop: the sockets are already reset
        finally:
            self._conns.discard(conn)
            for writer in (conn.client, conn.upstream):
                if writer is not None:
                    writer.close()

    async def _pump(self, conn: _Conn, creader: asyncio.StreamReader) -> None:
        """Forward both directions of ``conn`` until both have ended.

        The client's bytes are read and stamped from the moment of accept, while the
        upstream connect is still crossing the link, so the first request pays one
        RTT like any other, not one RTT plus a connect delay.
        """
        loop = asyncio.get_running_loop()
        upstream: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        client: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        client.set_result(conn.client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_Pipe(self, self._buckets["up"], creader, upstream, "up").run())
            await asyncio.sleep(self.delay_s)  # the SYN crosses the link
            ureader, uwriter = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                CONNECT_TIMEOUT_S)
            conn.upstream = uwriter
            for writer in (conn.client, uwriter):
                _no_delay(writer)
            upstream.set_result(uwriter)
            tg.create_task(_Pipe(self, self._buckets["down"], ureader, client, "down").run())


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY: the delay line already batches; Nagle would add its own ~40 ms waits."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _as_coro(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


# ---- command line ---------------------------------------------------------------

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_DELAY_UNITS = {"ms": 1e-3, "s": 1.0}


def parse_rate(text: str) -> float | None:
    """``"20mbit"`` -> 20e6 bit/s; units bit, kbit, mbit, gbit (tc's, decimal); a bare
    number is bit/s; ``"none"`` or ``"0"`` means no cap."""
    value, unit = _split(text, _RATE_UNITS, default_unit="bit")
    return None if value == 0 else value * _RATE_UNITS[unit]


def parse_delay(text: str) -> float:
    """``"50ms"`` -> 0.05 s; units ms and s; a bare number is seconds."""
    value, unit = _split(text, _DELAY_UNITS, default_unit="s")
    return value * _DELAY_UNITS[unit]


def _split(text: str, units: dict[str, float], *, default_unit: str) -> tuple[float, str]:
    cleaned = text.strip().lower()
    if cleaned == "none":
        return 0.0, default_unit
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", cleaned)
    if match is None or (match.group(2) and match.group(2) not in units):
        raise argparse.ArgumentTypeError(
            f"cannot parse {text!r}; expected a number with one of {sorted(units)}")
    return float(match.group(1)), match.group(2) or default_unit


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground until Ctrl-C (or ``--duration`` seconds)."""
    parser = argparse.ArgumentParser(prog="python -m bench.linkemu", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on (default 127.0.0.1, any free port)")
    parser.add_argument("--upstream", type=_host_port, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rate", type=parse_rate, default=None,
                        help="cap per direction, e.g. 20mbit, 512kbit (default: no cap)")
    parser.add_argument("--delay", type=parse_delay, default=0.0,
                        help="one-way delay per direction, e.g. 50ms (default 0)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to run before exiting (default: until Ctrl-C)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    emu = LinkEmulator(*args.upstream, listen_host=args.listen[0], listen_port=args.listen[1],
                       rate_bps=args.rate, delay_s=args.delay)
    port = emu.start()
    print(f"listening on {args.listen[0]}:{port} -> {args.upstream[0]}:{args.upstream[1]}",
          file=sys.stderr, flush=True)
    try:
        threading.Event().wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        print(emu.stats(), file=sys.stderr)
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

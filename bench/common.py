"""Helpers shared by the benchmarks: free ports, DCMTK peers, timing summaries."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_dicom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    """TCP_NODELAY=1: Debian's DCMTK leaves Nagle on and waits ~55 ms per C-STORE otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["TCP_NODELAY"] = "1"
    return env


def storescu(port: int, called_ae: str, *paths: Path) -> None:
    subprocess.run(["storescu", "-xr", "-aec", called_ae, "+sd", "+r", "+sp", "*.dcm",
                    "127.0.0.1", str(port), *map(str, paths)],
                   check=True, capture_output=True, env=dcmtk_env(), timeout=300)


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
            f"max {max(values):.2f} s (n={len(values)})")


@contextmanager
def serve_app(app: Any, *, start_timeout_s: float = 30.0) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not srv.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


PG_ADMIN_DSN = os.environ.get("RELAY_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Where benchmarks create (and drop) their PostgreSQL databases."""


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by the nearest-rank method."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


@contextmanager
def fresh_database(prefix: str) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, psycopg DSN) of a new database, migrated to head; dropped after."""
    import uuid

    import psycopg

    from relay.county.db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    dsn = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    try:
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(url)
        yield url, dsn
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def storescu_successes(port: int, files: Iterable[str], *, calling_ae: str,
                       called_ae: str = "RELAY_EDGE", timeout_s: float = 600.0) -> Iterator[str]:
    """Run `storescu -v` of ``files`` (one association) and yield each file's path as
    storescu gets a Success response for it: the instances a receiver has promised to
    keep. The caller may act between two (kill the receiver, cut the power); the
    generator ends when storescu exits, and storescu never outlives it."""
    proc = subprocess.Popen(
        ["storescu", "-v", "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port),
         *files], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dcmtk_env())
    assert proc.stdout is not None
    current: str | None = None
    try:
        for line in proc.stdout:  # ends when storescu exits (receiver gone or all sent)
            if line.startswith("I: Sending file: "):
                current = line.removeprefix("I: Sending file: ").strip()
            elif line.startswith("I: Received Store Response (Success)") and current:
                yield current
        proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Run the edge as a real process (`python -m relay edge`), for crash tests and benches.

Embedded defaults under a folder of its own, a free loopback port, and a county URL
nobody listens on (port 9, discard) so nothing is forwarded: what the edge holds
after a crash is exactly what it journaled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, wait_port

BOGUS_COUNTY = "http://127.0.0.1:9"


def edge_env(*, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """Environment of an edge process: no inherited RELAY_* settings, Nagle off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update({
        "RELAY_DATA_DIR": str(data_dir), "RELAY_EDGE_HOST": "127.0.0.1",
        "RELAY_EDGE_PORT": str(port), "RELAY_COUNTY_URL": BOGUS_COUNTY,
        "RELAY_EDGE_STATUS_PORT": "-1", "RELAY_LOG_LEVEL": "WARNING", "TCP_NODELAY": "1",
    })
    env.update({k.upper(): v for k, v in extra.items()})
    return env


class EdgeProcess:
    """One `python -m relay edge` subprocess; its log goes to ``log_path``."""

    def __init__(self, *, data_dir: Path, port: int, log_path: Path, **extra: str) -> None:
        self.port = port
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "edge"], cwd=REPO, stdout=self._log,
            stderr=subprocess.STDOUT, env=edge_env(data_dir=data_dir, port=port, **extra))

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_port(self.port, timeout)

    def wait_slots(self, spool_root: Path, count: int, timeout: float = 120.0) -> int:
        """Wait until the edge's pool of ahead-of-time spool files holds ``count`` (as a
        running edge's does; a fresh one fills it in its first seconds). Returns how many."""
        folder = spool_root / "slots"
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            ready = sum(1 for p in folder.glob("*") if p.suffix != ".tmp") if folder.is_dir() else 0
            if ready >= count:
                break
            time.sleep(0.1)
        return ready

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all, like a power cut for the process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()

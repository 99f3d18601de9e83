"""Run relay commands as real child processes in tests, with their logs kept for failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


class RelayProcess:
    """`python -m relay ARGS` with its output in a log file under the test's folder."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", *args], env=env, cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process, wait (bounded), kill its group if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def wait_for(what: str, check: Callable[[], bool], *, timeout: float, procs: list[RelayProcess] = ()) -> None:
    """Poll ``check`` until true; fail with the children's logs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        dead = [p for p in procs if p.proc.poll() is not None]
        if dead:
            break
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.name} (exit {p.proc.poll()}) ---\n{p.log()[-4000:]}" for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**relay_vars: str) -> dict[str, str]:
    """The test's environment without RELAY_* leftovers, plus the given RELAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    # Tests send whole studies at once: a study is ready after a second of quiet, not a
    # minute; and each edge's status page and services AE (worklist) get ports of their own.
    env.update({"RELAY_EDGE_STUDY_QUIET_S": "1", "RELAY_EDGE_STUDY_STAT_QUIET_S": "0.5",
                "RELAY_EDGE_STATUS_PORT": str(_free_port()), "RELAY_EDGE_SERVICES_PORT": str(_free_port())})
    env.update({f"RELAY_{k.upper()}": v for k, v in relay_vars.items()})
    env["TCP_NODELAY"] = "1"  # Debian's DCMTK leaves Nagle on otherwise (~55 ms per C-STORE)
    return env

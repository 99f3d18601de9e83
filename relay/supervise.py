"""Run several relay processes as children, restart the ones that die, stop them all cleanly.

`relay up` uses it to run edge, county API and worker on one machine. Each child is
`python -m relay <command>` with the same environment, so it builds its own settings.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

RESTART_DELAY_MAX_S = 30.0
"""Longest pause before restarting a child that keeps dying, in seconds."""
STOP_GRACE_S = 15.0
"""How long a child may take to stop after SIGTERM before it is killed, in seconds."""


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


class Supervisor:
    """Keeps the children running until ``stop`` is set, then terminates them."""

    def __init__(self, children: list[Child], *, env: dict[str, str]) -> None:
        self.children = children
        self.env = env
        self.stop = threading.Event()

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env)
        child.started_at = time.monotonic()
        log.info("started %s pid=%d", child.name, child.proc.pid)

    def _check(self, child: Child) -> None:
        if child.proc is None or child.proc.poll() is None:
            return
        if time.monotonic() - child.started_at > 60:
            child.restarts = 0  # it ran a while: a fresh failure, not a crash loop
        delay = min(RESTART_DELAY_MAX_S, 2.0 ** child.restarts)
        log.warning("%s exited with %s; restarting in %.0fs", child.name, child.proc.returncode, delay)
        child.proc, child.restarts, child.next_start = None, child.restarts + 1, time.monotonic() + delay

    def run(self) -> None:
        """Start everything, supervise until ``stop`` is set, then stop everything."""
        for child in self.children:
            self._start(child)
        while not self.stop.wait(0.5):
            for child in self.children:
                self._check(child)
                if child.proc is None and time.monotonic() >= child.next_start:
                    self._start(child)
        self.shutdown()

    def shutdown(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", child.name, STOP_GRACE_S)
                child.proc.kill()
                child.proc.wait()
        log.info("all children stopped")


def relay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env

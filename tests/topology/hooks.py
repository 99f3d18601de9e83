"""A local webhook receiver: the township's SMS/WeChat gateway and the on-duty lead's pager."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GATEWAY_LATENCY_S = 1.0
"""Seconds the receiver takes to answer a POST (default 1). A real SMS or WeChat gateway is
not instant; the sender keeps whatever it holds open meanwhile, as it would in production."""


@dataclass(frozen=True)
class Hook:
    path: str
    body: dict[str, Any]
    at: float
    """time.monotonic() when it arrived."""


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording every POST body it is sent, answering 200."""

    def __init__(self, *, latency_s: float = GATEWAY_LATENCY_S) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Hook] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                with outer._lock:
                    outer._hooks.append(Hook(self.path, body, time.monotonic()))
                time.sleep(latency_s)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhooks", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def township_url(self) -> str:
        """RELAY_CRITICAL_WEBHOOK_URL."""
        return f"{self.url}/township"

    @property
    def lead_url(self) -> str:
        """RELAY_CRITICAL_ESCALATION_URL."""
        return f"{self.url}/lead"

    def received(self, path: str | None = None, **match: Any) -> list[Hook]:
        """Hooks so far, optionally only those to ``path`` whose body has the given values."""
        with self._lock:
            hooks = list(self._hooks)
        return [h for h in hooks if (path is None or h.path == path)
                and all(h.body.get(k) == v for k, v in match.items())]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

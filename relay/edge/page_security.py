"""What guards the technician's page: the Host allow-list, the response headers, and
the technicians' login sessions with their CSRF tokens.

- Host: a page on 127.0.0.1 can still be reached by a web page whose DNS name is
  rebound to 127.0.0.1; only the Host names in the allow-list are answered (421 else).
- Headers: ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'`` (no framing,
  no clickjacking of the acknowledgement), a CSP without script and with a per-response
  nonce for the one style block, ``no-store`` (patient names stay out of caches), no
  referrer.
- Sessions: in memory (an edge restart logs everyone out), a random id in an HttpOnly,
  SameSite=Strict cookie (Secure over TLS), only its SHA-256 kept; each has its own CSRF
  token, which every form posts back. A session ends after ``idle`` without a click;
  the page's own refresh (``?auto=1``) does not count as one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from relay.edge.technicians import Technician

SESSION_COOKIE = "relay_edge_session"
LOGIN_COOKIE = "relay_edge_login"
"""A random value the login form echoes (double submit): CSRF protection before a session exists."""
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: str | None) -> str | None:
    """The host of a Host header, lower case, without port or IPv6 brackets."""
    if not header:
        return None
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else None
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(setting: str, bind_host: str) -> frozenset[str]:
    """The setting's names, or (empty) the bind address and the loopback names."""
    names = [name.strip().lower().strip("[]") for name in setting.split(",") if name.strip()]
    if not names:
        names = [*LOCAL_NAMES, *([] if is_wildcard(bind_host) else [bind_host.lower()])]
    return frozenset(names)


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warnings(*, host: str, tls: bool, allowed_setting: str, technicians: int) -> list[str]:
    """Security warnings for the page's start (no patient data): a non-loopback address
    without TLS, a wildcard bind without an allow-list, or nobody who can log in yet."""
    warnings = []
    if not is_loopback(host) and not tls:
        warnings.append(f"technician's page listens on {host} without TLS: passwords and patient names "
                        "cross the network in clear text; set RELAY_EDGE_STATUS_TLS_CERT and "
                        "RELAY_EDGE_STATUS_TLS_KEY, or bind 127.0.0.1")
    if is_wildcard(host) and not allowed_setting.strip():
        warnings.append("technician's page listens on every address but RELAY_EDGE_STATUS_ALLOWED_HOSTS is "
                        "unset: only localhost names are answered (others get 421)")
    if technicians == 0:
        warnings.append("technician's page: no technician login is cached yet, nobody can log in until the "
                        "county sends this site's technicians (relay users create NAME --role technician "
                        "--site SITE)")
    return warnings


def csp(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


PDF_CSP = "frame-ancestors 'none'; base-uri 'none'"
"""For a PDF (the browser's viewer needs its own resources): no framing, nothing else."""


def guard(allowed: frozenset[str]) -> Callable[[Request, Callable[[Request], Awaitable[Response]]],
                                              Awaitable[Response]]:
    """HTTP middleware: refuse foreign Host headers, set the security headers."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if host_name(request.headers.get("host")) not in allowed:
            response: Response = PlainTextResponse("421 Misdirected Request: this host name is not served here",
                                                   status_code=421)
        else:
            request.state.nonce = secrets.token_urlsafe(16)
            response = await call_next(request)
            pdf = response.media_type == "application/pdf" or \
                response.headers.get("content-type", "").startswith("application/pdf")
            response.headers.setdefault("Content-Security-Policy", PDF_CSP if pdf else csp(request.state.nonce))
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return middleware


@dataclass
class PageSession:
    """One technician's login in one browser."""

    technician: Technician
    csrf: str
    last_seen: float


@dataclass
class Sessions:
    """The page's logins, by the SHA-256 of their cookie."""

    idle_s: float
    secure: bool = False
    clock: Callable[[], float] = field(default=time.monotonic)
    """Seconds on a monotonic clock; tests pass their own to reach the idle limit without waiting."""
    _by_hash: dict[str, PageSession] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, technician: Technician) -> tuple[str, PageSession]:
        """A new session (a new id at every login: no fixation); returns the cookie value."""
        cookie = secrets.token_urlsafe(32)
        now = self.clock()
        made = PageSession(technician=technician, csrf=secrets.token_urlsafe(24), last_seen=now)
        with self._lock:
            self._expire(now)
            self._by_hash[_sha256(cookie)] = made
        return cookie, made

    def get(self, cookie: str | None, *, touch: bool = True) -> PageSession | None:
        """The live session of this cookie; ``touch`` counts the request as activity."""
        if not cookie:
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            found = self._by_hash.get(_sha256(cookie))
            if found is not None and touch:
                found.last_seen = now
            return found

    def drop(self, cookie: str | None) -> None:
        with self._lock:
            self._by_hash.pop(_sha256(cookie or ""), None)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._by_hash.items() if now - s.last_seen > self.idle_s]:
            del self._by_hash[key]

    def set_cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(name, value, httponly=True, samesite="strict", secure=self.secure, path="/")


async def checked_post(request: Request, sessions: Sessions) -> tuple[dict[str, str], Response | None]:
    """The form of a POST, or the refusal: 401 without a session, 403 without its CSRF token."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return form, JSONResponse({"detail": "log in first"}, status_code=401)
    if not same_token(form.get("csrf"), session.csrf):
        return form, JSONResponse({"detail": "bad or missing CSRF token"}, status_code=403)
    return form, None


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))

"""Portal page sessions: an opaque cookie for people in a browser, with a CSRF token.

The API keeps bearer tokens (integrations, the edge); the pages use a server-side
session instead, so no credential sits in JavaScript storage. The cookie holds a
256-bit random id (HttpOnly, SameSite=Lax, Secure over HTTPS); the database holds
only its SHA-256. A session ends after ``idle`` without requests, at its absolute
expiry, or at logout (the row is deleted, so the old cookie is worth nothing).

Cross-site request forgery: a browser sends the cookie with any request to us, so
every unsafe request authenticated by the cookie must also carry the session's
synchronizer token in the ``X-CSRF-Token`` header (a page reads it from its
``<meta name="csrf-token">``; another site cannot). When the browser sends an
``Origin`` header it must be our own origin as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from relay.county.auth.service import Principal

from relay.county.clock import now_utc
from relay.county.db.models import PortalSession, User
from relay.county.errors import Forbidden, Unauthorized
from relay.dicom.vocab import Role

COOKIE = "relay_session"
"""Name of the session cookie."""
CSRF_HEADER = "X-CSRF-Token"
"""Header an unsafe cookie-authenticated request carries its CSRF token in."""
CSRF_FORM_FIELD = "csrf_token"
"""Form field of the same token, for plain HTML form posts (logout)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods that change nothing (RFC 9110 §9.2.1); every other method needs the CSRF token."""
_TOUCH_EVERY = timedelta(seconds=60)
"""last_seen_at is written at most this often: a page loads dozens of images at once."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How long a session lives: ``idle`` without requests, ``absolute`` from login."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class PageSession:
    """A live session: who it belongs to and the CSRF token its pages send back."""

    principal: Principal
    display_name: str
    csrf_token: str
    expires_at: datetime


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _expired(row: PortalSession, policy: Policy, now: datetime) -> bool:
    return row.expires_at <= now or row.last_seen_at + policy.idle <= now


def create(*, session: Session, user: User, policy: Policy, replaces: str | None = None) -> str:
    """Start a session for ``user`` (already authenticated) and return the cookie value.

    Always a new id (no session fixation); ``replaces``, the browser's previous cookie,
    is destroyed. Expired sessions of anyone are swept here, so the table stays small.
    """
    now = now_utc()
    if replaces:
        destroy(session=session, session_id=replaces)
    session.execute(delete(PortalSession).where(
        or_(PortalSession.expires_at <= now, PortalSession.last_seen_at <= now - policy.idle)))
    session_id = secrets.token_urlsafe(32)
    session.add(PortalSession(session_sha256=_sha256(session_id), csrf_token=secrets.token_urlsafe(32),
                              user_id=user.id, created_at=now, last_seen_at=now,
                              expires_at=now + policy.absolute))
    session.flush()
    return session_id


def resolve(*, session: Session, session_id: str, policy: Policy) -> PageSession:
    """The live session behind a cookie value; Unauthorized when unknown, ended or expired.

    Records activity (at most once a minute) and commits it, so idle expiry counts from
    the last request.
    """
    row = session.execute(
        select(PortalSession, User).join(User, User.id == PortalSession.user_id)
        .where(PortalSession.session_sha256 == _sha256(session_id))
    ).one_or_none()
    if row is None:
        raise Unauthorized("session ended: log in again")
    page_session, user = row
    now = now_utc()
    if _expired(page_session, policy, now) or user.disabled_at is not None:
        # A statement, not ORM delete: parallel requests of the page may end it at once.
        session.execute(delete(PortalSession).where(PortalSession.id == page_session.id))
        session.commit()
        raise Unauthorized("session expired: log in again")
    if page_session.last_seen_at + _TOUCH_EVERY <= now:
        session.execute(update(PortalSession).where(PortalSession.id == page_session.id)
                        .values(last_seen_at=now))
        session.commit()
    principal = Principal(user.id, user.username, Role(user.role), user.site_id)
    return PageSession(principal, user.display_name or user.username, page_session.csrf_token,
                       page_session.expires_at)


def destroy(*, session: Session, session_id: str) -> None:
    """End a session server-side (logout): its cookie no longer logs anyone in."""
    session.execute(delete(PortalSession).where(PortalSession.session_sha256 == _sha256(session_id)))


def check_csrf(*, page_session: PageSession, token: str | None, origin: str | None,
               own_origin: str) -> None:
    """Refuse (403) an unsafe request whose CSRF token is missing or wrong, or whose
    ``Origin``, when the browser sent one, is not ours."""
    if origin is not None and origin != own_origin:
        raise Forbidden("cross-origin request refused (Origin does not match)")
    if not token or not hmac.compare_digest(token.encode(), page_session.csrf_token.encode()):
        raise Forbidden(f"CSRF token missing or wrong: send the page's token in {CSRF_HEADER}")

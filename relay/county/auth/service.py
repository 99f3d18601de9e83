"""Rules for users, sites and tokens. Secrets are stored only as hashes.

Passwords: Argon2id (argon2-cffi's defaults, RFC 9106). Tokens (bearer tokens and
site credentials) are 256-bit random strings, so a plain SHA-256 of them is enough
to store: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import ApiToken, Site, User
from relay.county.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from relay.dicom.vocab import Role

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so that a missing user and
# a wrong password take the same time.
_DUMMY_HASH = _hasher.hash("relay-no-such-user")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a logged-in person."""

    user_id: int
    username: str
    role: Role
    site_id: int | None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_site(*, session: Session, name: str, display_name: str = "") -> tuple[Site, str]:
    """Register a township site and return it with its credential (shown once)."""
    name = name.strip()
    if not name:
        raise BadRequest("site name is empty")
    if session.execute(select(Site).where(Site.name == name)).scalar_one_or_none():
        raise Conflict(f"site {name!r} exists")
    token = "site_" + secrets.token_urlsafe(32)
    site = Site(name=name, display_name=display_name or name, token_sha256=_sha256(token),
                created_at=now_utc())
    session.add(site)
    session.flush()
    return site, token


def site_for_token(*, session: Session, token: str) -> Site:
    """The site a credential belongs to; unknown or revoked credentials are refused."""
    site = session.execute(
        select(Site).where(Site.token_sha256 == _sha256(token))
    ).scalar_one_or_none()
    if site is None:
        raise Unauthorized("unknown site credential")
    if site.revoked_at is not None:
        raise Forbidden(f"site {site.name!r} is revoked")
    return site


def get_site(*, session: Session, name: str) -> Site:
    site = session.execute(select(Site).where(Site.name == name)).scalar_one_or_none()
    if site is None:
        raise NotFound(f"no site named {name!r}")
    return site


def create_user(
    *, session: Session, username: str, password: str, role: Role,
    site_name: str | None = None, display_name: str = "",
) -> User:
    """Create a login. A technician must belong to a site; the others may."""
    if len(password) < 8:
        raise BadRequest("password must have at least 8 characters")
    if role is Role.TECHNICIAN and not site_name:
        raise BadRequest("a technician must be bound to a site (--site)")
    if session.execute(select(User).where(User.username == username)).scalar_one_or_none():
        raise Conflict(f"user {username!r} exists")
    site_id = get_site(session=session, name=site_name).id if site_name else None
    user = User(username=username, display_name=display_name or username, role=role.value,
                site_id=site_id, password_hash=_hasher.hash(password), created_at=now_utc())
    session.add(user)
    session.flush()
    return user


@dataclass(frozen=True, slots=True)
class Lockout:
    """After ``max_failures`` wrong passwords in a row, a login is locked for ``minutes``."""

    max_failures: int = 5
    minutes: float = 15.0


class LoginLocked(Unauthorized):
    """The login is locked after too many wrong passwords (a 401 like any failed login)."""


def _reserve_attempt(session: Session, username: str, lockout: Lockout, now: datetime) -> bool | None:
    """Count this password attempt before it is checked, in one atomic UPDATE committed at
    once, so that concurrent guesses can never get past ``max_failures``: the attempt that
    reaches the cap locks the login (and zeroes the count) right away, before its own
    password is verified. None: no such user, or no attempt allowed (locked); else whether
    this attempt is the one that locked."""
    reaches_cap = User.failed_logins + 1 >= lockout.max_failures
    until = now + timedelta(minutes=lockout.minutes)
    row = session.execute(
        update(User)
        .where(User.username == username, or_(User.locked_until.is_(None), User.locked_until <= now))
        .values(failed_logins=case((reaches_cap, 0), else_=User.failed_logins + 1),
                locked_until=case((reaches_cap, until), else_=None))
        .returning(User.id, User.locked_until)
        .execution_options(synchronize_session=False)).one_or_none()
    session.commit()
    return None if row is None else row.locked_until is not None


def authenticate(*, session: Session, username: str, password: str, lockout: Lockout = Lockout()) -> User:
    """The user with this password, or Unauthorized (the same answer for both failures);
    a locked login is refused even with the right password until the lock ends."""
    now = now_utc()
    locked_by_me = _reserve_attempt(session, username, lockout, now)
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is not None and locked_by_me is None:
        raise LoginLocked("too many wrong passwords: this login is locked for a while")
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("wrong username or password") from None  # already counted
    if user is None or user.disabled_at is not None:
        raise Unauthorized("wrong username or password")
    # The right password: the attempts in a row start again; a lock this attempt set goes.
    # Committed here, so that a caller that stops before its own commit leaves no count.
    reset: dict[str, Any] = {"failed_logins": 0, **({"locked_until": None} if locked_by_me else {})}
    session.execute(update(User).where(User.id == user.id).values(**reset)
                    .execution_options(synchronize_session="fetch"))
    session.commit()
    return user


def issue_token(*, session: Session, user: User, ttl: timedelta) -> str:
    """A new bearer token for ``user``, valid for ``ttl``."""
    token = "usr_" + secrets.token_urlsafe(32)
    now = now_utc()
    session.add(ApiToken(token_sha256=_sha256(token), user_id=user.id, created_at=now,
                         expires_at=now + ttl))
    return token


def principal_for_token(*, session: Session, token: str) -> Principal:
    """Who holds this bearer token; expired or unknown tokens are refused."""
    row = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_sha256 == _sha256(token))
    ).one_or_none()
    if row is None:
        raise Unauthorized("unknown token")
    api_token, user = row
    if api_token.expires_at <= now_utc() or user.disabled_at is not None:
        raise Unauthorized("token expired")
    return Principal(user.id, user.username, Role(user.role), user.site_id)


def revoke_site(*, session: Session, name: str) -> Site:
    """Refuse the site's credential from now on (a stolen or retired edge)."""
    site = get_site(session=session, name=name)
    if site.revoked_at is None:
        site.revoked_at = now_utc()
    session.flush()
    return site


def list_sites(*, session: Session) -> list[Site]:
    return list(session.execute(select(Site).order_by(Site.name)).scalars())

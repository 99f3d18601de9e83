"""A password login, whichever door it comes through (API token or portal page): the
lockout applies and every success and failure is in the audit trail."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from relay.county.audit.service import Action, Entry, append
from relay.county.auth import service
from relay.county.context import County
from relay.county.db.models import User
from relay.county.errors import RelayError

log = logging.getLogger(__name__)


def password_login(*, county: County, session: Session, username: str, password: str, source: str) -> User:
    """The user with this password, audited; a wrong password counts towards the lockout.
    Raises Unauthorized (LoginLocked while locked)."""
    lockout = service.Lockout(max_failures=county.settings.login_max_failures,
                              minutes=county.settings.login_lockout_minutes)
    try:
        user = service.authenticate(session=session, username=username, password=password, lockout=lockout)
    except RelayError:
        log.info("login failed user_len=%d", len(username))
        append(county.sessions, Entry(actor=username, role="", action=Action.LOGIN_FAILED,
                                      outcome="failure", source=source))
        raise
    log.info("login user_id=%d role=%s", user.id, user.role)
    return user


def audit_login(*, county: County, user: User, source: str, detail: str = "") -> None:
    """Record a successful login, once its token or session is committed."""
    append(county.sessions, Entry(actor=user.username, role=user.role, action=Action.LOGIN, source=source,
                                  detail=detail))

"""Readers' signing keys: create (encrypted at rest), revoke, publish with owner and validity.

A key belongs to the reader who made it. Its published record names that reader
(username and display name), when it became valid, when it stopped (a newer key of the
same reader ends it) and whether and why it was revoked. Only readers make keys; an
administrator revokes them (so does the reader, for their own key), never makes one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.county.auth.service import Principal

from relay.county.clock import now_utc
from relay.county.db.models import SigningKey, User
from relay.county.errors import BadRequest, Conflict, Forbidden, NotFound
from relay.dicom import signing
from relay.dicom.vocab import Role

SIGNER_ROLES = (Role.RADIOLOGIST,)
"""Who signs reports: readers only (an administrator's key would vouch for nobody's reading)."""


def require_signer(principal: Principal) -> None:
    if principal.role not in SIGNER_ROLES:
        raise Forbidden("only readers make signing keys and sign reports")


def create_key(*, session: Session, principal: Principal, signing_password: str) -> SigningKey:
    """A new key for the calling reader. Their earlier keys stay published (old reports
    verify) but are valid only until now: from here on, only the new one signs."""
    require_signer(principal)
    try:
        kid, public_pem, encrypted = signing.new_key(signing_password)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    now = now_utc()
    session.execute(update(SigningKey).where(SigningKey.user_id == principal.user_id,
                                             SigningKey.valid_until.is_(None)).values(valid_until=now))
    key = SigningKey(key_id=kid, user_id=principal.user_id, public_pem=public_pem,
                     encrypted_private_pem=encrypted, created_at=now, valid_from=now)
    session.add(key)
    session.commit()
    return key


def current_key(*, session: Session, user_id: int) -> SigningKey | None:
    """The reader's key that may sign now (locked for the signature), if any."""
    now = now_utc()
    key = session.execute(select(SigningKey).where(SigningKey.user_id == user_id, SigningKey.revoked_at.is_(None))
                          .order_by(SigningKey.id.desc()).limit(1).with_for_update()).scalar_one_or_none()
    if key is None or (key.valid_until is not None and key.valid_until <= now) or key.valid_from > now:
        return None
    return key


def revoke_key(*, session: Session, principal: Principal, key_id: str, reason: str,
               effective_at: datetime | None = None) -> tuple[SigningKey, User]:
    """Revoke a key from ``effective_at`` (default now; earlier when it was compromised
    before it was noticed): documents it signed from then on do not verify."""
    found = session.execute(select(SigningKey, User).join(User, User.id == SigningKey.user_id)
                            .where(SigningKey.key_id == key_id).with_for_update(of=SigningKey)).one_or_none()
    if found is None:
        raise NotFound(f"no signing key {key_id}")
    key, owner = found
    if principal.role is not Role.ADMIN and principal.user_id != key.user_id:
        raise Forbidden("only an administrator or the key's owner revokes a key")
    if not reason.strip():
        raise BadRequest("say why the key is revoked (reason)")
    if key.revoked_at is not None:
        raise Conflict(f"key {key_id} was revoked already (since {key.revoked_at.isoformat()})")
    now = now_utc()
    at = effective_at or now
    if at.tzinfo is None:
        raise BadRequest("effective_at needs a time zone (e.g. +08:00 or Z)")
    if at > now:
        raise BadRequest("effective_at is in the future; revoke when the key is to stop")
    key.revoked_at, key.revocation_reason, key.revoked_by = at, reason.strip(), principal.username
    session.commit()
    return key, owner


def published(key: SigningKey, owner: User) -> signing.PublishedKey:
    return signing.PublishedKey(key_id=key.key_id, public_pem=key.public_pem, owner=owner.username,
                                owner_name=owner.display_name or owner.username, valid_from=key.valid_from,
                                valid_until=key.valid_until, revoked_at=key.revoked_at,
                                revocation_reason=key.revocation_reason)


def key_set(*, session: Session) -> signing.KeySet:
    """Every key ever made, revoked and ended ones too (reports signed while they were
    valid still verify), each with its owner, validity and revocation."""
    rows = session.execute(select(SigningKey, User).join(User, User.id == SigningKey.user_id)
                           .order_by(SigningKey.id)).all()
    keys = [published(key, owner) for key, owner in rows]
    return signing.KeySet({k.key_id: k for k in keys}, now_utc().isoformat())

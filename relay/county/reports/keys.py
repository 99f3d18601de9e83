"""Readers' signing keys: create (encrypted at rest), publish the public halves."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.auth.service import Principal, now_utc
from relay.county.db.models import SigningKey
from relay.county.errors import BadRequest, Forbidden
from relay.dicom import signing
from relay.dicom.vocab import Role


def create_key(*, session: Session, principal: Principal, signing_password: str) -> SigningKey:
    """A new key for the calling reader; earlier keys stay published (old reports verify)."""
    if principal.role not in (Role.RADIOLOGIST, Role.ADMIN):
        raise Forbidden("only readers sign reports")
    try:
        kid, public_pem, encrypted = signing.new_key(signing_password)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    key = SigningKey(key_id=kid, user_id=principal.user_id, public_pem=public_pem,
                     encrypted_private_pem=encrypted, created_at=now_utc())
    session.add(key)
    session.commit()
    return key


def current_key(*, session: Session, user_id: int) -> SigningKey | None:
    return session.execute(select(SigningKey).where(SigningKey.user_id == user_id, SigningKey.revoked_at.is_(None))
                           .order_by(SigningKey.id.desc()).limit(1)).scalar_one_or_none()


def published_keys(*, session: Session) -> dict[str, str]:
    """Every key ever used (revoked ones too: reports signed before revocation still verify)."""
    return {k.key_id: k.public_pem for k in session.execute(select(SigningKey)).scalars()}

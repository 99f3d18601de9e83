"""Signing keys: POST /api/signing-keys (a reader makes theirs), GET (published, public)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from relay.county.auth.deps import PrincipalDep, SessionDep
from relay.county.reports import keys

router = APIRouter(prefix="/api/signing-keys", tags=["reports"])


class NewKeyIn(BaseModel):
    signing_password: str = Field(min_length=8, description="Needed again at every signature; "
                                  "the private key is stored only encrypted under it.")


class KeyOut(BaseModel):
    key_id: str
    public_pem: str


@router.post("", response_model=KeyOut, status_code=201)
def create_key(body: NewKeyIn, principal: PrincipalDep, session: SessionDep) -> KeyOut:
    """Make a signing key for the calling reader."""
    key = keys.create_key(session=session, principal=principal, signing_password=body.signing_password)
    return KeyOut(key_id=key.key_id, public_pem=key.public_pem)


@router.get("", response_model=dict[str, str])
def published(session: SessionDep) -> dict[str, str]:
    """Every reader's public key by key id: what `relay verify-report` checks against.
    Public by nature: it lets anyone verify a report, and signs nothing."""
    return keys.published_keys(session=session)

"""Signed reports: the canonical document, Ed25519 signatures, offline verification.

Pure (no I/O): shared by the county, which signs, and by anyone who verifies a report
with the county's published public keys (`relay verify-report`). The signature covers
the canonical form of the whole document: report text, reader, time, study UID, and
the SOP Instance UIDs + SHA-256 of what was read, so neither the words nor the images
they speak of can change unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "county-relay-signed-report/1"


class SignatureError(ValueError):
    """The report does not verify; the message says why."""


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes that are signed: JSON, sorted keys, no spaces, UTF-8 (Chinese kept as is)."""
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def new_key(signing_password: str) -> tuple[str, str, str]:
    """A fresh key: (key id, public PEM, private PEM encrypted under the password)."""
    if len(signing_password) < 8:
        raise ValueError("a signing password has at least 8 characters")
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    public_pem = public.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    encrypted = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(signing_password.encode())).decode()
    return key_id(public), public_pem, encrypted


def unlock(encrypted_private_pem: str, signing_password: str) -> Ed25519PrivateKey:
    """The private key, for one signature; a wrong password is a SignatureError."""
    try:
        key = serialization.load_pem_private_key(encrypted_private_pem.encode(), signing_password.encode())
    except (ValueError, TypeError):
        raise SignatureError("wrong signing password") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("not an Ed25519 key")
    return key


@dataclass(frozen=True, slots=True)
class SignedReport:
    """A document with its signature, as stored, delivered and verified."""

    document: dict[str, Any]
    key_id: str
    signature: str
    """Base64 of the Ed25519 signature over canonical(document)."""

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "document": self.document, "key_id": self.key_id,
                           "signature": self.signature}, ensure_ascii=False, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SignedReport":
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise SignatureError(f"not a {FORMAT} file")
            return cls(dict(data["document"]), str(data["key_id"]), str(data["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"not a signed report: {exc}") from exc


def sign(document: dict[str, Any], private_key: Ed25519PrivateKey) -> SignedReport:
    signature = private_key.sign(canonical(document))
    return SignedReport(document, key_id(private_key.public_key()), base64.b64encode(signature).decode())


def verify(report: SignedReport, public_keys: dict[str, str]) -> None:
    """Raise SignatureError unless the report is signed by one of ``public_keys`` (id -> PEM)."""
    pem = public_keys.get(report.key_id)
    if pem is None:
        raise SignatureError(f"signed with key {report.key_id}, which is not among the published keys")
    public = serialization.load_pem_public_key(pem.encode())
    if not isinstance(public, Ed25519PublicKey) or key_id(public) != report.key_id:
        raise SignatureError(f"published key {report.key_id} does not match its id")
    try:
        public.verify(base64.b64decode(report.signature, validate=True), canonical(report.document))
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature does not match the report: it was changed after signing") from None

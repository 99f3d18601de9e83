"""Signed reports: the canonical document, Ed25519 signatures, offline verification.

Pure (no I/O): shared by the county, which signs, and by anyone who verifies a report
with the county's published key set (`relay verify-report`). The signature covers
the canonical form of the whole document: report text, reader, time, study UID, and
the SOP Instance UIDs + SHA-256 of what was read, so neither the words nor the images
they speak of can change unnoticed.

A signature alone proves only that some published key signed. A report verifies when,
besides, the reader it names (``reader``) owns that key, and the key was valid at the
time the report says it was signed (``signed_at``): not before the key's ``valid_from``,
not after its ``valid_until`` or its revocation. The key set that says so is trusted
when the county's key-set key signed it and its fingerprint is the one the township
pinned (``open_signed_key_set``); a key set fetched from a server is only as good as
that server.

What this cannot prove: the signing time is the signer's own claim. Someone holding a
reader's key and signing password can backdate a document to before the key's
revocation; revoking with the time the key was compromised (``effective_at``) bounds that.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "county-relay-signed-report/1"
KEY_SET_FORMAT = "county-relay-key-set/1"
"""The published key set (GET /api/signing-keys): every key with owner, validity, revocation."""
SIGNED_KEY_SET_FORMAT = "county-relay-signed-key-set/1"
"""The key set signed by the county's key-set key (`relay keys export`)."""


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


def _time(value: Any, what: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise SignatureError(f"{what} is not an ISO 8601 time: {value!r}") from None
    if at.tzinfo is None:
        raise SignatureError(f"{what} has no time zone: {value!r}")
    return at


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One reader's public key as the county publishes it: whose it is, and when it signs."""

    key_id: str
    public_pem: str
    owner: str
    """The owner's username: the ``reader`` of every document this key may sign."""
    owner_name: str
    valid_from: datetime
    valid_until: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: str = ""

    def to_json_obj(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_pem": self.public_pem,
                "owner": {"username": self.owner, "display_name": self.owner_name},
                "valid_from": self.valid_from.isoformat(), "valid_until": _iso(self.valid_until),
                "revoked_at": _iso(self.revoked_at), "revocation_reason": self.revocation_reason}

    @classmethod
    def from_json_obj(cls, obj: Mapping[str, Any]) -> "PublishedKey":
        try:
            owner = obj["owner"]
            return cls(key_id=str(obj["key_id"]), public_pem=str(obj["public_pem"]),
                       owner=str(owner["username"]), owner_name=str(owner.get("display_name", "")),
                       valid_from=_time(obj["valid_from"], "valid_from"),
                       valid_until=_time(obj["valid_until"], "valid_until") if obj.get("valid_until") else None,
                       revoked_at=_time(obj["revoked_at"], "revoked_at") if obj.get("revoked_at") else None,
                       revocation_reason=str(obj.get("revocation_reason") or ""))
        except (KeyError, TypeError, AttributeError) as exc:
            raise SignatureError(f"a key in the key set lacks its owner or validity ({exc})") from None

    def check_valid_at(self, at: datetime) -> None:
        """Raise SignatureError unless this key could sign at ``at``."""
        if at < self.valid_from:
            raise SignatureError(f"signed at {at.isoformat()}, before key {self.key_id} was valid "
                                 f"(from {self.valid_from.isoformat()})")
        if self.revoked_at is not None and at >= self.revoked_at:
            reason = f" ({self.revocation_reason})" if self.revocation_reason else ""
            raise SignatureError(f"signed at {at.isoformat()}, when key {self.key_id} was revoked "
                                 f"(since {self.revoked_at.isoformat()}{reason})")
        if self.valid_until is not None and at > self.valid_until:
            raise SignatureError(f"signed at {at.isoformat()}, after key {self.key_id} expired "
                                 f"({self.valid_until.isoformat()})")


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key the county has published, by key id."""

    keys: Mapping[str, PublishedKey] = field(default_factory=dict)
    published_at: str = ""

    def to_json_obj(self) -> dict[str, Any]:
        return {"format": KEY_SET_FORMAT, "published_at": self.published_at,
                "keys": [k.to_json_obj() for k in self.keys.values()]}

    @classmethod
    def from_json_obj(cls, obj: Any) -> "KeySet":
        """The key set as published; a bare {key id: PEM} map, which names no owners, is refused."""
        if not isinstance(obj, Mapping):
            raise SignatureError("not a key set")
        if obj.get("format") == SIGNED_KEY_SET_FORMAT:
            raise SignatureError("a signed key set: open it with its pinned fingerprint (--pin)")
        if obj.get("format") != KEY_SET_FORMAT:
            raise SignatureError("not a county key set: a bare list of public keys names no owners; "
                                 "ask the county for the file `relay keys export` writes")
        keys = [PublishedKey.from_json_obj(k) for k in obj.get("keys", [])]
        return cls({k.key_id: k for k in keys}, str(obj.get("published_at", "")))


def verify(report: SignedReport, keys: KeySet | Mapping[str, Any]) -> PublishedKey:
    """Raise SignatureError unless the report is signed by a published key (``keys``: a KeySet
    or the published key set's JSON) that belongs to the reader the report names and was
    valid when the report was signed; return that key."""
    key_set = keys if isinstance(keys, KeySet) else KeySet.from_json_obj(keys)
    key = key_set.keys.get(report.key_id)
    if key is None:
        raise SignatureError(f"signed with key {report.key_id}, which is not among the published keys")
    public = serialization.load_pem_public_key(key.public_pem.encode())
    if not isinstance(public, Ed25519PublicKey) or key_id(public) != report.key_id:
        raise SignatureError(f"published key {report.key_id} does not match its id")
    try:
        public.verify(base64.b64decode(report.signature, validate=True), canonical(report.document))
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature does not match the report: it was changed after signing") from None
    signer = str(report.document.get("reader", ""))
    if signer != key.owner:
        raise SignatureError(f"the report names {signer or 'no one'} as its reader, but key {report.key_id} "
                             f"belongs to {key.owner}")
    key.check_valid_at(_time(report.document.get("signed_at"), "the report's signed_at"))
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """What a township pins: ``sha256:`` and the hex SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as typed (any case, with or without ``sha256:``, colons or spaces)."""
    hexits = "".join(c for c in text.lower().removeprefix("sha256:") if c not in ": \t")
    if len(hexits) != 64 or any(c not in "0123456789abcdef" for c in hexits):
        raise SignatureError(f"not a key-set fingerprint (sha256: and 64 hex digits): {text!r}")
    return "sha256:" + hexits


def sign_key_set(key_set: KeySet, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The key set signed with the county's key-set key (what `relay keys export` writes)."""
    body = key_set.to_json_obj()
    public = private_key.public_key()
    public_pem = public.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"format": SIGNED_KEY_SET_FORMAT, "key_set": body,
            "signer": {"public_pem": public_pem, "fingerprint": fingerprint(public)},
            "signature": base64.b64encode(private_key.sign(canonical(body))).decode()}


def open_signed_key_set(obj: Any, *, pin: str) -> KeySet:
    """The key set inside a signed export, if the county's key pinned as ``pin`` signed it."""
    if isinstance(obj, Mapping) and obj.get("format") == KEY_SET_FORMAT:
        raise SignatureError("this key set is not signed (it is what GET /api/signing-keys serves): "
                             "use the file `relay keys export` writes, or --county to trust a server")
    if not isinstance(obj, Mapping) or obj.get("format") != SIGNED_KEY_SET_FORMAT:
        raise SignatureError("not a signed county key set: a bare list of public keys names no owners; "
                             "ask the county for the file `relay keys export` writes")
    pinned = normalise_fingerprint(pin)
    try:
        public = serialization.load_pem_public_key(str(obj["signer"]["public_pem"]).encode())
        body, signature = obj["key_set"], base64.b64decode(str(obj["signature"]), validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"the key set's signature is missing or malformed ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise SignatureError("the key set is not signed with an Ed25519 key")
    if fingerprint(public) != pinned:
        raise SignatureError(f"the key set is signed by {fingerprint(public)}, not by the pinned county key "
                             f"{pinned}: refused")
    try:
        public.verify(signature, canonical(body))
    except InvalidSignature:
        raise SignatureError("the key set's signature does not verify: it was changed after export") from None
    return KeySet.from_json_obj(body)

"""The county's key-set key: it signs the exported key set (`relay keys export`).

It lives outside the database, in the file ``RELAY_COUNTY_KEYSET_KEY_FILE`` (default
``<data_dir>/county-keyset-key.pem``; in production put it where the database's
administrators cannot write), made on first use, readable by its owner only (0600).
Someone who can change the database can publish a key in a reader's name; they cannot
sign the key set without this file, and the townships pin its fingerprint
(`relay keys fingerprint`) once.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from relay.county.reports import keys
from relay.dicom import signing


class KeySetKeyError(Exception):
    """The key-set key file cannot be used; the message says why."""


def load_or_create(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in ``path``, made (0600, durably) if there is none; and whether it was made."""
    created = False
    if not path.exists():
        _create(path)
        created = True
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeySetKeyError(f"{path} is readable by others (mode {mode:04o}): chmod 0600 it, and make a "
                             "new key if anyone else may have read it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeySetKeyError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeySetKeyError(f"{path} is not an Ed25519 key")
    return key, created


def _create(path: Path) -> None:
    """Write a new key to a temporary file (0600), fsync, then link it into place: never a
    half-written key, and never over one that a concurrent first use made meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        tmp.unlink()
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def fingerprint(private: Ed25519PrivateKey) -> str:
    return signing.fingerprint(private.public_key())


def export(*, session: Session, private: Ed25519PrivateKey) -> tuple[dict[str, Any], int]:
    """The county's key set signed with the key-set key, and how many keys it holds."""
    published = keys.key_set(session=session)
    return signing.sign_key_set(published, private), len(published.keys)

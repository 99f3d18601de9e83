"""The county's key-set key: it signs the exported key set (`relay keys export`).

It lives outside the database, in the file ``RELAY_COUNTY_KEYSET_KEY_FILE`` (default
``<data_dir>/county-keyset-key.pem``; in production put it where the database's
administrators cannot write), made on first use, readable by its owner only (0600).
Someone who can change the database can publish a key in a reader's name; they cannot
sign the key set without this file, and the townships pin its fingerprint
(`relay keys fingerprint`) once.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from relay.county import keyfile
from relay.county.reports import signing_keys
from relay.dicom import signing


class KeySetKeyError(Exception):
    """The key-set key file cannot be used; the message says why."""


def load_or_create(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in ``path``, made (0600, durably) if there is none; and whether it was made."""
    created = keyfile.create(path) if not path.exists() else False
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeySetKeyError(f"{path} is readable by others (mode {mode:04o}): chmod 0600 it, and make a "
                             "new key if anyone else may have read it")
    try:
        return keyfile.read(path), created
    except keyfile.KeyFileError as exc:
        raise KeySetKeyError(str(exc)) from None


def fingerprint(private: Ed25519PrivateKey) -> str:
    return signing.fingerprint(private.public_key())


def export(*, session: Session, private: Ed25519PrivateKey) -> tuple[dict[str, Any], int]:
    """The county's key set signed with the key-set key, and how many keys it holds."""
    published = signing_keys.key_set(session=session)
    return signing.sign_key_set(published, private), len(published.keys)

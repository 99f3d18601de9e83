"""Ed25519 private keys kept in files outside the database (the key-set key, the audit
checkpoint key): made on first use, whole and durable, readable by their owner only.

Two processes starting together may both try to make the key: each writes its own
temporary file (mode 0600, fsynced) and links it into place, so exactly one key wins and
nobody ever reads a half-written one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class KeyFileError(ValueError):
    """The file holds no usable unencrypted Ed25519 private key; the message says why."""


def create(path: Path) -> bool:
    """Make a new key at ``path`` unless one is there; True if this call made it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another writer made the key first: theirs is kept
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return True


def read(path: Path) -> Ed25519PrivateKey:
    """The key in ``path`` (FileNotFoundError if there is none)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key

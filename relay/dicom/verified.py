"""Bytes verified once where they enter the county, carried downstream with their proof.

A ``VerifiedInstance`` is made at a trust boundary (an ingest route, a bundle's frame, a
STOW-RS part, the county's own renderings): the bytes are hashed once, compared with
what the sender claimed, and their routing UIDs read. Code downstream (the object store,
the index row) takes the SHA-256 it carries as given instead of hashing the bytes again.
Construct one only through ``verify_instance`` or ``checked_instance``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from relay.dicom.header import InstanceIds, read_ids


class DigestMismatch(ValueError):
    """The bytes do not have the SHA-256 their sender claimed."""


@dataclass(frozen=True, slots=True)
class VerifiedInstance:
    """A DICOM instance's bytes, their SHA-256 (lowercase hex) and routing UIDs."""

    data: bytes
    sha256: str
    ids: InstanceIds

    @property
    def size(self) -> int:
        return len(self.data)


def verify_instance(data: bytes, *, claimed_sha256: str | None = None) -> VerifiedInstance:
    """Hash ``data`` (once), check it against ``claimed_sha256`` when given, read its UIDs.

    Raises DigestMismatch, or relay.dicom.header.InvalidInstance naming what is wrong."""
    sha256 = hashlib.sha256(data).hexdigest()
    if claimed_sha256 is not None and sha256 != claimed_sha256.lower():
        raise DigestMismatch("SHA-256 of the bytes does not match the claimed digest")
    return VerifiedInstance(data=data, sha256=sha256, ids=read_ids(data))


def checked_instance(data: bytes, *, sha256: str) -> VerifiedInstance:
    """For bytes whose ``sha256`` the caller has just checked (a bundle frame, checked by
    relay.dicom.bundle.iter_frames): read the UIDs without hashing again."""
    return VerifiedInstance(data=data, sha256=sha256.lower(), ids=read_ids(data))

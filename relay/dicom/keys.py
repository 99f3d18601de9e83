"""Deterministic object keys for the county store.

The key of an instance contains the SHA-256 of its bytes. Two uploads of the same
SOP Instance UID with the same bytes land on the same key with the same content, and
an upload with different bytes lands on a different key: an object is never
overwritten with other bytes, even by two API replicas racing, with no conditional
write needed from the object store (dcm4chee #4754/#4969 lost data replacing in place).
"""

from __future__ import annotations

import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_uid(uid: str) -> str:
    """Return ``uid`` if it is a syntactically valid DICOM UID, else raise ValueError."""
    if not uid or len(uid) > 64 or not _UID.match(uid):
        raise ValueError(f"not a DICOM UID: {uid!r}")
    return uid


def instance_key(*, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    """Object key of one received instance."""
    for uid in (study_uid, series_uid, sop_uid):
        check_uid(uid)
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return f"dicom/{study_uid}/{series_uid}/{sop_uid}/{sha256}.dcm"


def quarantine_key(*, sop_uid: str, sha256: str) -> str:
    """Object key of bytes that conflict with an instance already held under the same UID."""
    check_uid(sop_uid)
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return f"quarantine/{sop_uid}/{sha256}.dcm"

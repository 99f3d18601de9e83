"""DIMSE status codes the edge answers with (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

import enum


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses used by the edge SCP."""

    SUCCESS = 0x0000
    """The instance is fsynced and journaled: the sender may forget it."""
    OUT_OF_RESOURCES = 0xA700
    """Refused: no room to keep the instance durably (disk full or below watermark)."""
    DATASET_MISMATCH = 0xA900
    """Refused: the dataset does not match the SOP class, or lacks its SOP Instance UID."""
    CANNOT_UNDERSTAND = 0xC000
    """Refused: the payload could not be parsed as a DICOM dataset."""
    PROCESSING_FAILURE = 0x0110
    """Refused: the edge failed for a reason of its own; the sender should retry."""


class CommitmentStatus(enum.IntEnum):
    """Storage Commitment (PS3.4 J.3): N-ACTION response statuses the edge answers with,
    and the Failure Reason (0008,1197) of an item in a report's Failed SOP Sequence."""

    SUCCESS = 0x0000
    """N-ACTION: the request is durably recorded; the outcome follows as N-EVENT-REPORT."""
    PROCESSING_FAILURE = 0x0110
    """Failure reason: the edge cannot commit the instance (not at the county in time,
    quarantined there, two different objects under one UID, its spool file missing)."""
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """Failure reason: no instance with this SOP Instance UID reached the edge."""
    INVALID_OBJECT_INSTANCE = 0x0117
    """N-ACTION: the Requested SOP Instance is not the well-known Storage Commitment one."""
    NO_SUCH_SOP_CLASS = 0x0118
    """N-ACTION: the Requested SOP Class is not Storage Commitment Push Model (an AE
    that routes another SOP Class's N-ACTION here)."""
    CLASS_INSTANCE_CONFLICT = 0x0119
    """Failure reason: the edge holds this SOP Instance UID under another SOP Class."""
    INVALID_ARGUMENT_VALUE = 0x0115
    """N-ACTION: the Action Information is malformed (Transaction UID, Referenced SOP
    Sequence or one of its items missing or not a valid UID)."""
    NO_SUCH_ACTION = 0x0123
    """N-ACTION: an Action Type ID other than 1 (Request Storage Commitment)."""
    RESOURCE_LIMITATION = 0x0213
    """N-ACTION: the request could not be recorded durably (disk full) or is too large."""

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

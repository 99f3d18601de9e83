"""Families of SOP classes the relay treats alike (PS3.4 storage SOP class UIDs)."""

from __future__ import annotations

WAVEFORM_PREFIX = "1.2.840.10008.5.1.4.1.1.9."
"""Waveform storage (12-lead and general ECG among them): drawn as paper, not as pixels."""
DOCUMENT_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.")
"""Structured reports and encapsulated documents: no pixels, and not new imaging to read."""


def is_waveform(sop_class_uid: str) -> bool:
    return sop_class_uid.startswith(WAVEFORM_PREFIX)


def is_document(sop_class_uid: str) -> bool:
    return sop_class_uid.startswith(DOCUMENT_PREFIXES)

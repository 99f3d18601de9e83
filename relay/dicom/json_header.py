"""An instance's header as DICOM JSON (PS3.18 F.2), made once at indexing and kept in the
index, so that WADO-RS metadata never has to read the whole object again. Pure: bytes in,
text out."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom

BULK_THRESHOLD = 1 << 20
"""Bytes above which a value is left out of the JSON (a BulkDataURI instead), as PS3.18 allows."""


def header_json(data: bytes) -> str | None:
    """The header (no pixel data) as compact DICOM JSON text; None if it cannot be decoded
    (the instance is still indexed; its metadata is then read from the object)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        body: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                                               bulk_data_element_handler=lambda _e: "")
    except Exception:  # pydicom raises many types on corrupt input
        return None
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

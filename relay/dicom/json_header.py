"""An instance's header as DICOM JSON (PS3.18 F.2), made once (at ingest, or at indexing
when it was not kept) and kept in the index, so that neither the index task nor WADO-RS
metadata has to read the whole object again. Pure: bytes or text in, values out."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from relay.dicom.header import InstanceIds, InstanceMeta, InvalidInstance, ids_from_dataset, meta_of_dataset, parse_header

BULK_THRESHOLD = 1 << 20
"""Bytes above which a value is left out of the JSON (a BulkDataURI instead), as PS3.18 allows."""


def _json_of(ds: Dataset) -> str:
    body: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                                           bulk_data_element_handler=lambda _e: "")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def header_json(data: bytes) -> str | None:
    """The header (no pixel data) as compact DICOM JSON text; None if it cannot be decoded
    (the instance is still indexed; its metadata is then read from the object)."""
    try:
        return _json_of(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    except Exception:  # pydicom raises many types on corrupt input
        return None


def read_header(data: bytes) -> tuple[InstanceMeta, str | None]:
    """One parse of the object's header for both what the index needs and its DICOM JSON
    (None if that cannot be made); InvalidInstance if the header cannot be read at all."""
    ds = parse_header(data)
    try:
        text: str | None = _json_of(ds)
    except Exception:  # pydicom raises many types on values it cannot convert
        text = None
    ds.decode()
    return meta_of_dataset(ds, ids_from_dataset(ds)), text


def meta_from_json(text: str, ids: InstanceIds) -> InstanceMeta:
    """What the index needs, from a kept DICOM JSON header (text is already Unicode);
    InvalidInstance if the text is not one."""
    try:
        ds = Dataset.from_json(text, bulk_data_uri_handler=lambda *_a: b"")
    except Exception as exc:  # pydicom raises many types on malformed JSON
        raise InvalidInstance(f"kept header is not DICOM JSON: {type(exc).__name__}") from exc
    return meta_of_dataset(ds, ids)

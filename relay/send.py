"""A small DICOM C-STORE sender (SCU), as a modality would send: `relay send`, the demo.

Files are sent as they are on disk: the presentation context offers the file's own
transfer syntax, so nothing is decoded or transcoded on the way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendResult:
    path: Path
    sop_uid: str
    status: int | None
    """DIMSE status of the C-STORE response; None if no response came."""


def dicom_files(paths: list[Path]) -> list[Path]:
    """Every ``*.dcm`` file under the given files and folders, sorted for a stable order."""
    found: list[Path] = []
    for p in paths:
        found.extend(sorted(p.rglob("*.dcm")) if p.is_dir() else [p])
    return found


def send_files(
    files: list[Path], *, host: str, port: int, called_ae: str, calling_ae: str = "RELAY_SEND",
    priority: int = 0,
) -> list[SendResult]:
    """C-STORE each file over one association; return the status of each."""
    datasets = [(f, pydicom.dcmread(f)) for f in files]
    # Dedupe requested contexts: one per (SOP class, transfer syntax) pair.
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets})
    ae = AE(ae_title=calling_ae)
    if len(pairs) > 128:
        raise ValueError("more than 128 SOP class / transfer syntax pairs in one send")
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} was not established")
    results: list[SendResult] = []
    try:
        for f, ds in datasets:
            status = assoc.send_c_store(ds, priority=priority)
            results.append(SendResult(f, str(ds.SOPInstanceUID), getattr(status, "Status", None)))
    finally:
        assoc.release()
    return results

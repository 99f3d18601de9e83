"""The signed report inside the printable PDF, as a standard PDF attachment.

The PDF carries the signed JSON (the file `relay verify-report` checks) as an embedded
file, ``signed-report.json``, in the document's EmbeddedFiles name tree and declared as
an Associated File with relationship /Source (ISO 32000-1 7.11.4; ISO 19005-3, the way
e-invoices carry their XML). So the PDF alone, as printed from the edge's page or as
the Encapsulated PDF the township PACS receives, is enough to verify the report, and
any PDF reader lists the attachment (poppler: ``pdfdetach -list``). No private DICOM
attribute is needed; DICOM's own Digital Signatures sign data elements with X.509
certificates, which is not what the reader signed.

Reading back is deliberately narrow: it finds the one attachment this project writes
(a direct ``/Length``, optionally Flate-compressed) and refuses anything else loudly.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime

from fpdf import FPDF

NAME = "signed-report.json"
"""The attachment's file name, fixed: the reader looks for exactly this one."""


class AttachmentError(ValueError):
    """The PDF does not carry a readable signed report; the message says why."""


def embed(pdf: FPDF, signed_json: str, at: datetime) -> None:
    """Attach the signed JSON to a PDF being built (dated ``at`` so rebuilds are identical)."""
    pdf.embed_file(bytes=signed_json.encode(), basename=NAME, modification_date=at, creation_date=at,
                   mime_type="application/json", associated_file_relationship="Source",
                   desc="Signed report (Ed25519): relay verify-report", compress=False)


_FILESPEC = re.compile(rb"/F\s*\(" + re.escape(NAME.encode()) + rb"\)")
_EF = re.compile(rb"/EF\s*<<\s*/F\s+(\d+)\s+0\s+R")
_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")


def _objects(pdf: bytes) -> dict[int, tuple[int, int]]:
    """Object number -> (start, end) of its text, for the PDF's direct objects."""
    found = {}
    starts = [(m.start(), int(m.group(1))) for m in re.finditer(rb"(?<![0-9])(\d+)\s+0\s+obj\b", pdf)]
    for (start, number), (following, _) in zip(starts, [*starts[1:], (len(pdf), 0)]):
        found[number] = (start, following)
    return found


def extract(pdf: bytes) -> str:
    """The signed JSON attached to ``pdf``; an AttachmentError when it has none."""
    if not pdf.startswith(b"%PDF-"):
        raise AttachmentError("not a PDF")
    objects = _objects(pdf)
    specs = [n for n, (s, e) in objects.items() if _FILESPEC.search(pdf, s, e) and b"/Filespec" in pdf[s:e]]
    if len(specs) != 1:
        raise AttachmentError(f"the PDF has {len(specs)} attachments named {NAME}, not one")
    start, end = objects[specs[0]]
    ef = _EF.search(pdf, start, end)
    if ef is None or int(ef.group(1)) not in objects:
        raise AttachmentError(f"the PDF's {NAME} attachment has no embedded stream")
    start, end = objects[int(ef.group(1))]
    head = pdf.find(b"stream", start, end)
    length = _LENGTH.search(pdf, start, head)
    if head < 0 or length is None:
        raise AttachmentError(f"the PDF's {NAME} stream has no direct /Length")
    body = head + len(b"stream") + (2 if pdf[head + 6:head + 8] == b"\r\n" else 1)
    data = pdf[body:body + int(length.group(1))]
    try:
        if b"/FlateDecode" in pdf[start:head]:
            data = zlib.decompress(data)
        return data.decode()
    except (zlib.error, UnicodeDecodeError) as exc:
        raise AttachmentError(f"the PDF's {NAME} attachment is damaged: {exc}") from exc

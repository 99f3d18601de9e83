"""`relay verify-report` on what the township actually holds: the signed JSON, the Basic
Text SR and the Encapsulated PDF its PACS received, or the printable PDF.

The key set says whose each key is and when it was valid (relay.dicom.signing.verify):
the report's reader must own the key, and the key must have been valid at ``signed_at``.
The signature covers the signed document only. The SR and the PDF carry that document
(the SR in its SIGNEDRPT TEXT item, the PDF as an attachment), so the signature is
checked on it first; then what a person reads is held against it. For the SR that is
everything it shows: the content tree is rebuilt from the verified document and must be
item for item the same (headings, findings, impression, advice, 危急值, observer), and
the header's study UID, accession number, verifying observer and time, and the SOP
Instance UID (derived from study, revision and kind) must agree. A PACS user who edits
the SR's impression leaves the embedded JSON intact, and still fails here.

For the PDF the study UID, accession number and SOP Instance UID are checked. The drawn
page is not compared with the document (that would need the same fonts and fpdf2
version as the county, and a PDF text extractor); the attached document is the proof.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from relay.county.reports import attachment, objects, sr
from relay.dicom.signing import KeySet, PublishedKey, SignatureError, SignedReport, verify
from relay.dicom.vocab import ReportKind


@dataclass(frozen=True, slots=True)
class Verified:
    """A report that verifies, and what carried it."""

    report: SignedReport
    carrier: str
    """'signed JSON', 'Basic Text SR', 'Encapsulated PDF' or 'PDF'."""
    key: PublishedKey
    """The key that signed it, whose owner is the report's reader."""


def verify_file(*, path: Path, public_keys: KeySet | Mapping[str, Any]) -> Verified:
    """Verify the report in ``path`` (any carrier) against the county's key set (a KeySet or
    its published JSON): the signature, its signer as the key's owner, the key valid at the
    signing time, and what the carrier shows. A SignatureError says what is wrong."""
    keys = public_keys if isinstance(public_keys, KeySet) else KeySet.from_json_obj(public_keys)
    data = path.read_bytes()
    if data.startswith(b"%PDF-"):
        report = _from_pdf(data)
        return Verified(report, "PDF", verify(report, keys))
    if data.lstrip()[:1] == b"{":
        report = SignedReport.from_json(data.decode("utf-8"))
        return Verified(report, "signed JSON", verify(report, keys))
    ds = _dicom(path)
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == objects.BASIC_TEXT_SR:
        report = _signed_in_sr(ds)
        key = verify(report, keys)
        check_sr(ds, report.document)
        return Verified(report, "Basic Text SR", key)
    if sop_class == objects.ENCAPSULATED_PDF:
        report = _from_pdf(encapsulated_pdf(ds))
        key = verify(report, keys)
        check_encapsulated_pdf(ds, report.document)
        return Verified(report, "Encapsulated PDF", key)
    raise SignatureError(f"a DICOM object of SOP class {sop_class or '(none)'} is not a report this relay sends")


def _dicom(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise SignatureError(f"not a signed report JSON, DICOM SR, Encapsulated PDF or PDF: {exc}") from None


def _from_pdf(pdf: bytes) -> SignedReport:
    try:
        return SignedReport.from_json(attachment.extract(pdf))
    except attachment.AttachmentError as exc:
        raise SignatureError(str(exc)) from None


def encapsulated_pdf(ds: Dataset) -> bytes:
    """The PDF inside an Encapsulated PDF object (without the even-length pad)."""
    if str(ds.get("MIMETypeOfEncapsulatedDocument", "")) != "application/pdf":
        raise SignatureError("the Encapsulated Document is not application/pdf")
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return data[:int(length)] if length else data.rstrip(b"\0")


def _is_signed_document(item: Dataset) -> bool:
    concept = item.ConceptNameCodeSequence[0]
    code = objects.SIGNED_DOCUMENT
    return bool(concept.CodeValue == code.value and concept.CodingSchemeDesignator == code.scheme_designator)


def _signed_in_sr(ds: Dataset) -> SignedReport:
    found = [item for item in ds.get("ContentSequence", []) if item.get("ValueType") == "TEXT"
             and _is_signed_document(item)]
    if len(found) != 1:
        raise SignatureError(f"the SR has {len(found)} signed report documents, not one")
    return SignedReport.from_json(str(found[0].TextValue))


def _code(item: Dataset) -> tuple[str, str, str]:
    return str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning)


def _value(item: Dataset) -> Any:
    kind = str(item.get("ValueType", ""))
    # Trailing spaces of DICOM text are padding (PS3.5 6.2): pydicom drops them on reading.
    if kind == "TEXT":
        return str(item.TextValue).rstrip(" ")
    if kind == "PNAME":
        return str(item.PersonName).rstrip(" ")
    if kind == "CODE":
        return _code(item.ConceptCodeSequence[0])
    if kind == "CONTAINER":
        return str(item.ContinuityOfContent)
    raise SignatureError(f"the SR holds a {kind or 'typeless'} content item, which this relay never writes")


def _tree(items: Any, depth: int = 0) -> list[tuple[int, str, tuple[str, str, str], Any]]:
    """The content tree flattened in document order: (depth, relationship, concept, value)."""
    out = []
    for item in items:
        out.append((depth, str(item.get("RelationshipType", "")), _code(item.ConceptNameCodeSequence[0]),
                    _value(item)))
        out += _tree(item.get("ContentSequence", []), depth + 1)
    return out


def _same(what: str, found: Any, expected: Any) -> None:
    if str(found) != str(expected):
        raise SignatureError(f"the {what} does not match the signed report: it was changed after signing")


def _check_header(ds: Dataset, document: dict[str, Any], obj: objects.ReportObject) -> None:
    _same("object's Study Instance UID", ds.get("StudyInstanceUID", ""), document["study_instance_uid"])
    _same("object's Accession Number", ds.get("AccessionNumber", ""), document.get("accession_number", ""))
    uids = objects.object_uids(study_uid=str(document["study_instance_uid"]), revision=int(document["revision"]),
                               kind=str(document.get("kind", ReportKind.REPORT)), obj=obj)
    _same("object's SOP Instance UID (it names the study, revision and kind)", ds.get("SOPInstanceUID", ""),
          uids.sop_uid)


def _check_request(ds: Dataset, document: dict[str, Any]) -> None:
    """The SR's Referenced Request Sequence is the signed document's order (or absent with none)."""
    expected, found = sr.request_item(document), ds.get("ReferencedRequestSequence", [])
    if expected is None:
        if found:
            raise SignatureError("the SR names an order the signed report does not: it was changed after signing")
        return
    if len(found) != 1:
        raise SignatureError("the SR does not name exactly the signed report's order")
    for keyword in ("AccessionNumber", "PlacerOrderNumberImagingServiceRequest", "RequestedProcedureID"):
        _same(f"SR's requested {keyword}", found[0].get(keyword, ""), expected.get(keyword, ""))


def check_sr(ds: Dataset, document: dict[str, Any]) -> None:
    """Everything the SR shows agrees with the (already verified) signed document."""
    _check_header(ds, document, objects.ReportObject.SR)
    _check_request(ds, document)
    observers = ds.get("VerifyingObserverSequence", [])
    if len(observers) != 1 or ds.get("VerificationFlag") != "VERIFIED":
        raise SignatureError("the SR is not verified by exactly one observer")
    _same("SR's Verifying Observer Name", observers[0].get("VerifyingObserverName", ""), objects._reader(document))
    at = objects._signed_at(document)
    _same("SR's Verification DateTime", observers[0].get("VerificationDateTime", ""),
          at.strftime("%Y%m%d%H%M%S") + at.strftime("%z"))
    signed_json = str(next(i for i in ds.ContentSequence if _is_signed_document(i)).TextValue)
    expected = _tree([sr._content(document, signed_json, sr.predecessor_of(document))])
    found = _tree([ds])
    for have, want in zip(found, expected):
        if have != want:
            raise SignatureError(f"the SR's '{want[2][2]}' item does not match the signed report: "
                                 "it was changed after signing")
    if len(found) != len(expected):
        raise SignatureError(f"the SR has {len(found)} content items where the signed report makes "
                             f"{len(expected)}: it was changed after signing")


def check_encapsulated_pdf(ds: Dataset, document: dict[str, Any]) -> None:
    """The Encapsulated PDF's header agrees with the (already verified) signed document."""
    _check_header(ds, document, objects.ReportObject.PDF)

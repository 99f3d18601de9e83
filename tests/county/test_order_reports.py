"""The order (申请单) in the signed report: the SR names it in its Referenced Request Sequence,
the PDF prints 检查号 and 申请单号, both verify, and reports signed before orders (no
``order`` in their document) still verify as they were. Pure, plus DCMTK's dcmdump."""

from __future__ import annotations

import subprocess

import pydicom

from relay.county.reports import pdf as pdf_rendering
from relay.county.reports.verification import verify_file
from tests.county.test_report_objects import DOCUMENT, STUDY, pdf_text, tool
from tests.county.test_report_verification import KEYS, pdf_bytes, rejected, sr_file

ORDERED = {**DOCUMENT, "order": {
    "placer_order_number": "HIS-1001", "placer_issuer": "HIS.XZ", "accession_number": "A20261122001",
    "requested_procedure_id": "RP1", "procedure_code": "DX-CHEST", "procedure_description": "胸部正位",
    "ordering_department": "内科", "ordering_doctor": "张医生"}}


def test_the_sr_names_the_order_it_answers_and_verifies(tmp_path):
    path = sr_file(tmp_path / "sr.dcm", ORDERED)
    ds = pydicom.dcmread(path)
    (request,) = ds.ReferencedRequestSequence
    assert (ds.AccessionNumber, request.AccessionNumber, request.PlacerOrderNumberImagingServiceRequest,
            request.RequestedProcedureID, request.OrderPlacerIdentifierSequence[0].LocalNamespaceEntityID) == \
        ("A20261122001", "A20261122001", "HIS-1001", "RP1", "HIS.XZ")
    assert verify_file(path=path, public_keys=KEYS).report.document == ORDERED
    dump = subprocess.run([tool("dcmdump"), str(path)], check=True, capture_output=True, text=True).stdout
    assert "PlacerOrderNumberImagingServiceRequest" in dump and "HIS-1001" in dump


def test_an_sr_whose_order_number_was_changed_fails(tmp_path):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm", ORDERED))
    ds.ReferencedRequestSequence[0].PlacerOrderNumberImagingServiceRequest = "HIS-9999"
    ds.save_as(tmp_path / "edited.dcm")
    assert "does not match the signed report" in rejected(tmp_path / "edited.dcm")


def test_a_report_signed_before_orders_has_no_request_and_still_verifies(tmp_path):
    path = sr_file(tmp_path / "sr.dcm", DOCUMENT)
    assert "ReferencedRequestSequence" not in pydicom.dcmread(path)
    assert verify_file(path=path, public_keys=KEYS).carrier == "Basic Text SR"
    ds = pydicom.dcmread(path)
    ds.ReferencedRequestSequence = pydicom.dcmread(sr_file(tmp_path / "o.dcm", ORDERED)).ReferencedRequestSequence
    ds.save_as(tmp_path / "added.dcm")
    assert "names an order the signed report does not" in rejected(tmp_path / "added.dcm")


def test_the_pdf_prints_the_accession_and_the_order_number(tmp_path):
    text = pdf_text(pdf_bytes(ORDERED), tmp_path)
    for expected in ("检查号", "A20261122001", "申请单号", "HIS-1001", "申请科室", "内科", "张医生", "胸部正位"):
        assert expected in text
    (tmp_path / "r.pdf").write_bytes(pdf_bytes(ORDERED))
    assert verify_file(path=tmp_path / "r.pdf", public_keys=KEYS).report.document == ORDERED


def test_a_study_matched_without_an_accession_prints_the_order_s(tmp_path):
    study = STUDY.__class__(**{**{f: getattr(STUDY, f) for f in STUDY.__dataclass_fields__}, "accession_number": ""})
    assert pdf_rendering.accession(ORDERED, study) == "A20261122001"
    assert pdf_rendering.accession(DOCUMENT, study) == ""

"""`relay verify-report` on what the township PACS receives: the Basic Text SR and the
Encapsulated PDF (and the printable PDF), each carrying the signed document. A change to
what a person reads fails loudly even when the embedded signed JSON is intact.

Pure and fast (no servers); poppler's pdfdetach is the independent reader of the PDF
attachment. The end-to-end run through storescu, the edge and DCMTK storescp is
tests/test_report_roundtrip.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.county.reports import objects
from relay.county.reports import pdf as pdf_rendering
from relay.county.reports import sr as sr_rendering
from relay.county.reports.verification import verify_file
from relay.dicom import signing
from tests.county.test_report_objects import ADDENDUM, CRITICAL, DOCUMENT, STUDY
from tests.processes import base_env

KEY_ID, PUBLIC_PEM, ENCRYPTED = signing.new_key("sign-me-please")
KEYS = signing.KeySet({KEY_ID: signing.PublishedKey(KEY_ID, PUBLIC_PEM, owner="dr.wang", owner_name="王医生",
                                                    valid_from=datetime(2026, 1, 1, tzinfo=UTC))})
"""dr.wang's key, as the county's key set publishes it (the documents are his, of 2026-11-23)."""
KEYSET_KEY = Ed25519PrivateKey.generate()
"""The county's key-set key; townships pin its fingerprint."""


def keyset_file(path: Path, keys: signing.KeySet = KEYS) -> Path:
    """The key set as `relay keys export` writes it."""
    path.write_text(json.dumps(signing.sign_key_set(keys, KEYSET_KEY), ensure_ascii=False), encoding="utf-8")
    return path


def signed(document: dict = CRITICAL) -> signing.SignedReport:
    return signing.sign(document, signing.unlock(ENCRYPTED, "sign-me-please"))


def sr_file(path: Path, document: dict = CRITICAL) -> Path:
    report = signed(document)
    path.write_bytes(sr_rendering.build_sr(document=document, study=STUDY, signature_b64=report.signature,
                                      key_id=report.key_id))
    return path


def pdf_bytes(document: dict = CRITICAL) -> bytes:
    report = signed(document)
    return pdf_rendering.build_pdf(document=document, study=STUDY, key_id=report.key_id, signature_b64=report.signature)


def encapsulated_file(path: Path, document: dict = CRITICAL) -> Path:
    path.write_bytes(pdf_rendering.build_encapsulated_pdf(pdf=pdf_bytes(document), document=document, study=STUDY))
    return path


def impression_item(ds: pydicom.Dataset) -> pydicom.Dataset:
    section = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "19005-8")
    return section.ContentSequence[0]


def rejected(path: Path) -> str:
    with pytest.raises(signing.SignatureError) as caught:
        verify_file(path=path, public_keys=KEYS)
    return str(caught.value)


@pytest.mark.parametrize("document", [DOCUMENT, CRITICAL, ADDENDUM], ids=["report", "critical", "addendum"])
def test_the_sr_the_encapsulated_pdf_and_the_pdf_each_verify(tmp_path, document):
    (tmp_path / "report.pdf").write_bytes(pdf_bytes(document))
    found = {verify_file(path=p, public_keys=KEYS).carrier: verify_file(path=p, public_keys=KEYS).report.document
             for p in (sr_file(tmp_path / "sr.dcm", document), encapsulated_file(tmp_path / "pdf.dcm", document),
                       tmp_path / "report.pdf")}
    assert found == {"Basic Text SR": document, "Encapsulated PDF": document, "PDF": document}


def test_an_sr_whose_impression_lost_one_character_fails_although_its_signed_json_is_intact(tmp_path):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    impression_item(ds).TextValue = impression_item(ds).TextValue[:-1]
    ds.save_as(tmp_path / "edited.dcm")
    assert "'Impression' item does not match the signed report" in rejected(tmp_path / "edited.dcm")


def test_an_sr_whose_critical_result_section_was_removed_fails(tmp_path):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    ds.ContentSequence = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "73568-8"]
    ds.save_as(tmp_path / "edited.dcm")
    assert "does not match the signed report" in rejected(tmp_path / "edited.dcm")


@pytest.mark.parametrize("keyword, value", [("StudyInstanceUID", "2.25.4712"), ("AccessionNumber", "A1"),
                                            ("SOPInstanceUID", "2.25.99")])
def test_an_sr_moved_to_another_study_or_accession_fails(tmp_path, keyword, value):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    setattr(ds, keyword, value)
    ds.save_as(tmp_path / "edited.dcm")
    assert "does not match the signed report" in rejected(tmp_path / "edited.dcm")


def test_an_sr_with_another_verifying_observer_fails(tmp_path):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    ds.VerifyingObserverSequence[0].VerifyingObserverName = "dr.li"
    ds.save_as(tmp_path / "edited.dcm")
    assert "Verifying Observer Name" in rejected(tmp_path / "edited.dcm")


def test_an_sr_whose_embedded_document_was_edited_fails_its_signature(tmp_path):
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    item = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "SIGNEDRPT")
    data = json.loads(item.TextValue)
    data["document"]["impression"] = "未见异常。"
    item.TextValue = json.dumps(data, ensure_ascii=False)
    impression_item(ds).TextValue = "未见异常。"
    ds.save_as(tmp_path / "edited.dcm")
    assert "changed after signing" in rejected(tmp_path / "edited.dcm")


def test_an_encapsulated_pdf_moved_to_another_study_fails(tmp_path):
    ds = pydicom.dcmread(encapsulated_file(tmp_path / "pdf.dcm"))
    ds.StudyInstanceUID = "2.25.4712"
    ds.save_as(tmp_path / "edited.dcm")
    assert "Study Instance UID does not match" in rejected(tmp_path / "edited.dcm")


def test_a_pdf_whose_attached_document_changed_by_one_character_fails(tmp_path):
    pdf = pdf_bytes()
    at = pdf.index("右下肺炎".encode())
    (tmp_path / "edited.pdf").write_bytes(pdf[:at] + "左下肺炎".encode() + pdf[at + len("右下肺炎".encode()):])
    assert "changed after signing" in rejected(tmp_path / "edited.pdf")


def test_a_pdf_without_the_signed_document_does_not_verify(tmp_path):
    (tmp_path / "plain.pdf").write_bytes(pdf_rendering.build_pdf(document=CRITICAL, study=STUDY, key_id=KEY_ID))
    assert "0 attachments named signed-report.json" in rejected(tmp_path / "plain.pdf")


def test_any_pdf_reader_lists_and_extracts_the_signed_document(tmp_path):
    pdfdetach = shutil.which("pdfdetach")
    assert pdfdetach, "pdfdetach is missing: run make peers (poppler-utils is in APT_PEERS)"
    (tmp_path / "report.pdf").write_bytes(pdf_bytes())
    listed = subprocess.run([pdfdetach, "-list", "report.pdf"], cwd=tmp_path, check=True, capture_output=True,
                            text=True).stdout
    assert "signed-report.json" in listed
    subprocess.run([pdfdetach, "-save", "1", "-o", "out.json", "report.pdf"], cwd=tmp_path, check=True)
    assert signing.SignedReport.from_json((tmp_path / "out.json").read_text()) == signed()


def test_the_command_verifies_an_sr_and_fails_on_an_edited_one(tmp_path):
    keyset_file(tmp_path / "keys.json")
    pin = signing.fingerprint(KEYSET_KEY.public_key())
    ds = pydicom.dcmread(sr_file(tmp_path / "sr.dcm"))
    impression_item(ds).TextValue = impression_item(ds).TextValue.replace("右", "左", 1)
    ds.save_as(tmp_path / "edited.dcm")

    def run(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay", "verify-report", name, "--keys", "keys.json",
                               "--pin", pin], cwd=tmp_path, env=base_env(), capture_output=True, text=True,
                              timeout=60)

    good, bad = run("sr.dcm"), run("edited.dcm")
    assert good.returncode == 0 and "report verifies (Basic Text SR)" in good.stdout, good.stderr
    assert "signed by dr.wang (王医生)" in good.stdout
    assert bad.returncode == 1 and "REPORT DOES NOT VERIFY" in bad.stderr and "Impression" in bad.stderr

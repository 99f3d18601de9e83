"""What goes back to the township: the signed report as Basic Text SR, PDF and Encapsulated PDF.

Pure and fast; DCMTK (dsrdump, dcmdump) and poppler (pdftotext, pdffonts) are the
independent readers, and a missing one fails the test (make peers installs them).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from relay.county.reports import objects
from relay.county.reports import pdf as pdf_rendering
from relay.county.reports import sr as sr_rendering
from relay.dicom import signing

KEY_ID = "0123456789abcdef0123456789abcdef"
SIGNATURE = "c2lnbmF0dXJl"
DOCUMENT = {
    "study_instance_uid": "2.25.4711", "accession_number": "A20261122001", "site": "城关镇卫生院",
    "revision": 1, "kind": "report", "reader": "dr.wang", "signed_at": "2026-11-23T02:20:00.123456+00:00",
    "findings": "双肺纹理增多、增粗，右下肺野见斑片状模糊影，边缘不清。\n心影大小、形态未见异常。",
    "impression": "右下肺炎，建议抗感染治疗后复查。", "advice": "抗感染治疗2周后复查胸片。", "critical": False,
    "instances": [["2.25.11", "8e14e9d2b27c60cca2ae49cb2d50d9db78f3b65123ea1dc05f1efbd88f61fa8a"]],
}
STUDY = objects.StudyHeader(
    study_uid="2.25.4711", patient_name="Li^Na=李^娜", patient_id="P0001", birth_date="19810302", sex="F",
    accession_number="A20261122001", study_date="20261122", study_time="093000", institution="城关镇卫生院",
    referring_physician="张^伟", modality="DX", study_description="胸部正位片",
    evidence=(("2.25.10", "1.2.840.10008.5.1.4.1.1.1.1", "2.25.11"),))
ADDENDUM = {**DOCUMENT, "revision": 2, "kind": "addendum", "impression": "补充：右侧少量胸腔积液。", "advice": ""}
CRITICAL = {**DOCUMENT, "critical": True}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run make peers (DCMTK and poppler-utils are in APT_PEERS)"
    return path


def sr_bytes(document: dict = DOCUMENT) -> bytes:
    return sr_rendering.build_sr(document=document, study=STUDY, signature_b64=SIGNATURE, key_id=KEY_ID)


@pytest.fixture(scope="module")
def pdfs() -> dict[str, bytes]:
    return {name: pdf_rendering.build_pdf(document=doc, study=STUDY, key_id=KEY_ID)
            for name, doc in (("report", DOCUMENT), ("critical", CRITICAL), ("addendum", ADDENDUM))}


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run([tool("pdftotext"), str(path), "-"], check=True, capture_output=True, text=True).stdout


def text_items(sr: hd.sr.EnhancedSR) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}

    def walk(items) -> None:
        for item in items:
            if item.value_type == hd.sr.ValueTypeValues.TEXT:
                found.setdefault(item.name.value, []).append(item.value)
            walk(getattr(item, "ContentSequence", []))
    walk(sr.content)
    return found


def test_the_sr_is_a_verified_basic_text_sr_of_the_study():
    ds = pydicom.dcmread(io.BytesIO(sr_bytes()))
    assert ds.SOPClassUID == objects.BASIC_TEXT_SR and ds.Modality == "SR"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyInstanceUID == STUDY.study_uid and ds.AccessionNumber == STUDY.accession_number
    assert str(ds.PatientName) == "Li^Na=李^娜" and ds.PatientID == "P0001" and ds.PatientSex == "F"
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "VERIFIED")
    observer = ds.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "dr.wang"
    assert observer.VerifyingOrganization == objects.CENTRE
    assert observer.VerificationDateTime == "20261123102000+0800"
    assert (ds.ContentDate, ds.ContentTime) == ("20261123", "102000")
    assert ds.SeriesDescription == "诊断报告"
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "2.25.11"


def test_the_sr_content_tree_holds_the_report_text_exactly():
    sr = hd.sr.EnhancedSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes())))
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    texts = text_items(sr)
    assert texts["121071"] == [DOCUMENT["findings"]]
    assert texts["121073"] == [DOCUMENT["impression"]]
    assert texts["121075"] == [DOCUMENT["advice"]]
    assert "55112-7" not in texts  # no critical-results section unless critical


def test_the_sr_carries_the_signed_document_for_offline_verification():
    texts = text_items(hd.sr.EnhancedSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes()))))
    carried = signing.SignedReport.from_json(texts["SIGNEDRPT"][0])
    assert carried == signing.SignedReport(DOCUMENT, KEY_ID, SIGNATURE)


def test_a_critical_report_has_a_critical_results_section():
    ds = pydicom.dcmread(io.BytesIO(sr_bytes(CRITICAL)))
    headings = [item.ConceptNameCodeSequence[0].CodeValue for item in ds.ContentSequence]
    assert "73568-8" in headings


def test_no_advice_means_no_recommendation_item():
    sr = hd.sr.EnhancedSR.from_dataset(pydicom.dcmread(io.BytesIO(sr_bytes({**DOCUMENT, "advice": ""}))))
    assert "121075" not in text_items(sr)


def test_an_addendum_sr_references_the_report_it_follows():
    ds = pydicom.dcmread(io.BytesIO(sr_bytes(ADDENDUM)))
    report = pydicom.dcmread(io.BytesIO(sr_bytes()))
    assert ds.SeriesDescription == "补充报告"
    ref = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == report.SeriesInstanceUID
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == report.SOPInstanceUID
    assert "55107-7" in [item.ConceptNameCodeSequence[0].CodeValue for item in ds.ContentSequence]


def test_dcmtk_reads_the_sr_without_errors(tmp_path):
    for name, doc in (("report", CRITICAL), ("addendum", ADDENDUM)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(sr_bytes(doc))
        for command in ([tool("dsrdump"), str(path)], [tool("dcmdump"), str(path)]):
            # dsrdump cuts long values at a byte count, mid-character: decode leniently
            run = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace")
            assert run.returncode == 0, run.stderr
            assert "E:" not in run.stderr and "F:" not in run.stderr, run.stderr
        dump = subprocess.run([tool("dsrdump"), str(path)], capture_output=True,
                              encoding="utf-8", errors="replace").stdout
        assert "Verification Flag   : VERIFIED" in dump and "dr.wang" in dump


def test_uids_are_deterministic_and_differ_between_revisions_and_objects():
    first, again = pydicom.dcmread(io.BytesIO(sr_bytes())), pydicom.dcmread(io.BytesIO(sr_bytes()))
    addendum = pydicom.dcmread(io.BytesIO(sr_bytes(ADDENDUM)))
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SeriesInstanceUID == again.SeriesInstanceUID
    assert addendum.SOPInstanceUID != first.SOPInstanceUID
    assert sr_bytes() == sr_bytes()  # a rebuild after a crash is a byte-identical duplicate
    pdf_uids = objects.object_uids(study_uid=STUDY.study_uid, revision=1, kind="report", obj=objects.ReportObject.PDF)
    assert pdf_uids.sop_uid != first.SOPInstanceUID
    assert all(len(uid) <= 64 and uid.startswith("2.25.") for uid in (first.SOPInstanceUID, pdf_uids.sop_uid))


def test_a_report_for_another_study_is_refused():
    with pytest.raises(ValueError, match="study_instance_uid"):
        sr_rendering.build_sr(document={**DOCUMENT, "study_instance_uid": "2.25.9"}, study=STUDY,
                         signature_b64=SIGNATURE, key_id=KEY_ID)


@pytest.mark.parametrize(("pn", "shown"), [("Li^Na=李^娜", "李娜"), ("王^小明", "王小明"),
                                           ("Zhang^San", "Zhang San"), ("", "")])
def test_patient_names_read_as_chinese_readers_write_them(pn, shown):
    assert pdf_rendering.display_name(pn) == shown


def test_the_pdf_text_is_the_report_text(pdfs, tmp_path):
    text = pdf_text(pdfs["report"], tmp_path)
    for expected in ("县域医共体远程诊断中心", "城关镇卫生院", "诊断意见", DOCUMENT["impression"], "李娜",
                     "检查所见", "心影大小、形态未见异常。", "建议", "dr.wang", "2026-11-23 10:20", KEY_ID,
                     "relay verify-report", "A20261122001", "45岁"):
        assert expected in text, expected
    assert "危急值" not in text


def test_the_pdf_embeds_a_cjk_font(pdfs, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(pdfs["report"])
    fonts = subprocess.run([tool("pdffonts"), str(path)], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in fonts.splitlines()[2:]]
    assert rows and all("CJK" in row[0] for row in rows)
    assert all(row[-5] == "yes" for row in rows)  # emb column


def test_a_critical_pdf_shows_the_banner(pdfs, tmp_path):
    assert "危急值" in pdf_text(pdfs["critical"], tmp_path)


def test_an_addendum_pdf_is_titled_as_such(pdfs, tmp_path):
    text = pdf_text(pdfs["addendum"], tmp_path)
    assert "补充报告" in text and ADDENDUM["impression"] in text


def test_the_pdf_is_the_same_bytes_on_rebuild(pdfs):
    assert pdf_rendering.build_pdf(document=DOCUMENT, study=STUDY, key_id=KEY_ID) == pdfs["report"]


def test_the_encapsulated_pdf_round_trips_the_exact_pdf(pdfs, tmp_path):
    for pdf in (pdfs["report"], pdfs["report"] + b"\n"):  # odd and even lengths
        data = pdf_rendering.build_encapsulated_pdf(pdf=pdf, document=DOCUMENT, study=STUDY)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.SOPClassUID == objects.ENCAPSULATED_PDF
        assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
        assert ds.EncapsulatedDocument[:ds.EncapsulatedDocumentLength] == pdf
        assert ds.StudyInstanceUID == STUDY.study_uid and str(ds.PatientName) == STUDY.patient_name
        assert ds.DocumentTitle.startswith("诊断报告")
        sr = pydicom.dcmread(io.BytesIO(sr_bytes()))
        assert ds.SOPInstanceUID != sr.SOPInstanceUID and ds.SeriesInstanceUID != sr.SeriesInstanceUID
    path = tmp_path / "pdf.dcm"
    path.write_bytes(data)
    run = subprocess.run([tool("dcmdump"), str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "E:" not in run.stderr, run.stderr


def test_the_signed_document_is_unchanged_by_rendering():
    document = json.loads(json.dumps(DOCUMENT))
    sr_bytes(document)
    assert document == DOCUMENT


def test_a_long_report_breaks_lines_the_chinese_way_and_names_the_patient_on_every_page(tmp_path):
    findings = "左侧基底节区见类圆形高密度影，大小约3.2cm×2.8cm，CT值约65HU，周围见低密度水肿带。" * 40
    pdf = pdf_rendering.build_pdf(document={**DOCUMENT, "findings": findings}, study=STUDY, key_id=KEY_ID)
    path = tmp_path / "long.pdf"
    path.write_bytes(pdf)
    page2 = subprocess.run([tool("pdftotext"), "-f", "2", "-l", "2", str(path), "-"],
                           check=True, capture_output=True, text=True).stdout
    assert "李娜" in page2 and "P0001" in page2 and "A20261122001" in page2
    lines = [line.strip() for line in pdf_text(pdf, tmp_path).splitlines() if line.strip()]
    assert not [line for line in lines if line[0] in "，。、；："]
    assert "65HU" in "".join(lines) and not [line for line in lines if line.startswith(("U，", "HU"))]


def test_the_reader_is_named_as_people_know_them_on_the_pdf_and_in_the_sr(tmp_path):
    document = {**DOCUMENT, "reader_name": "王建国"}
    sr = pydicom.dcmread(io.BytesIO(sr_bytes(document)))
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "王建国"
    pdf = pdf_rendering.build_pdf(document=document, study=STUDY)
    assert "王建国" in pdf_text(pdf, tmp_path)

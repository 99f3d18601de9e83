"""What goes back to the township: a signed report as DICOM SR, as PDF, as Encapsulated PDF.

Pure: no database, no network; only the system CJK font files are read. The signed
JSON document stays the verifiable artefact; these are renderings of it. Every object
gets UIDs derived from (study, revision, kind, object), so re-building after a crash
yields byte-identical objects with the same SOP Instance UIDs: the township PACS sees
a duplicate, never a second report.

Library choices:

* the SR content tree is built from ``highdicom.sr`` content items, which validate each
  item at construction; the document around it is written with pydicom, because
  highdicom has no Basic Text SR class, its SR base stamps VerificationDateTime with
  the build time (we need ``signed_at``, and identical bytes on rebuild) and it needs
  evidence datasets that the signed document does not carry.
* the PDF is drawn with fpdf2: pure Python, subsets and embeds the OpenType/CFF Noto
  Sans CJK faces of Debian's fonts-noto-cjk straight from the .ttc (reportlab's TTFont
  refuses CFF outlines), and gives real bold for headings.
"""

from __future__ import annotations

import enum
import io
import re
import uuid
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from fpdf import FPDF
from highdicom.sr import (CodeContentItem, ContainerContentItem, ContentSequence, PnameContentItem,
                          RelationshipTypeValues, TextContentItem)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from relay.county.reports import attachment
from relay.dicom import signing

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
CENTRE = "县域医共体远程诊断中心"
"""Who verifies: the county reading centre (VerifyingOrganization, PDF header)."""
MANUFACTURER = "county-relay"
CHINA = timezone(timedelta(hours=8), "CST")
"""Asia/Shanghai: UTC+8 all year (no daylight saving since 1991), so no tzdata needed."""
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:county-relay:report-objects")
"""Fixed forever: changing it would give every rebuilt report object new UIDs."""
LOCAL_SCHEME = "99CNRELAY"
"""Local coding scheme (DICOM reserves designators starting with 99 for local codes)."""
FONT_DIR = Path("/usr/share/fonts/opentype/noto")
"""Debian fonts-noto-cjk (in the Makefile's APT_PEERS)."""
FONT_FAMILY = "Noto Sans CJK SC"

_CONTAINS = RelationshipTypeValues.CONTAINS
_OBS_CONTEXT = RelationshipTypeValues.HAS_OBS_CONTEXT
_CONCEPT_MOD = RelationshipTypeValues.HAS_CONCEPT_MOD

# TID 2000 vocabulary: the title (CID 7000), section headings (CID 7001, LOINC) and the
# narrative items inside them (CID 7002).
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS = Code("59776-5", "LN", "Findings")
FINDING = Code("121071", "DCM", "Finding")
IMPRESSIONS = Code("19005-8", "LN", "Impressions")
IMPRESSION = Code("121073", "DCM", "Impression")
RECOMMENDATIONS = Code("18783-1", "LN", "Recommendations")
RECOMMENDATION = Code("121075", "DCM", "Recommendation")
CRITICAL_RESULTS = Code("73568-8", "LN", "Communication of Critical Results")
"""危急值: the one standard heading in CID 7001 for critical results; its presence is the flag."""
SUMMARY = Code("55112-7", "LN", "Summary")
ADDENDUM = Code("55107-7", "LN", "Addendum")
COMMENT = Code("121106", "DCM", "Comment")
LANGUAGE = Code("121049", "DCM", "Language of Content Item and Descendants")
CHINESE = Code("zh-CN", "RFC5646", "Chinese (China)")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
PERSON = Code("121006", "DCM", "Person")
PERSON_OBSERVER = Code("121008", "DCM", "Person Observer Name")
SIGNED_DOCUMENT = Code("SIGNEDRPT", LOCAL_SCHEME, "Signed report document")
"""TEXT item holding the whole signed JSON (the file `relay verify-report` reads).
No standard concept exists for an Ed25519 signature over our JSON, and DICOM Digital
Signatures sign data elements, not this document, so a local code is the honest choice."""
CRITICAL_NOTE = "危急值：本报告含危急值，请立即通知临床医生并处理。"


class ReportObject(enum.StrEnum):
    """Which rendering of a report revision a UID belongs to."""

    SR = "sr"
    """The Basic Text SR (TID 2000 shape)."""
    PDF = "pdf"
    """The Encapsulated PDF of the printable report."""


@dataclass(frozen=True, slots=True)
class StudyHeader:
    """The patient and study the report speaks of, as the study's own instances carry them."""

    study_uid: str
    patient_name: str
    """DICOM PN, e.g. 'Li^Na=李^娜' or '王^小明'."""
    patient_id: str
    birth_date: str
    """DICOM DA (YYYYMMDD) or ''."""
    sex: str
    """M, F, O or ''."""
    accession_number: str
    study_date: str
    study_time: str
    institution: str
    """The township hospital where the study was done."""
    referring_physician: str = ""
    study_id: str = ""
    modality: str = ""
    """e.g. 'CT', 'DX', 'ECG'; shown on the PDF."""
    study_description: str = ""
    evidence: tuple[tuple[str, str, str], ...] = ()
    """(series UID, SOP class UID, SOP instance UID) of what was read; recorded in the SR
    as Current Requested Procedure Evidence when given."""

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "StudyHeader":
        """The header of a study from any one of its instances."""
        def text(keyword: str) -> str:
            return str(ds.get(keyword, "") or "")
        return cls(study_uid=text("StudyInstanceUID"), patient_name=text("PatientName"),
                   patient_id=text("PatientID"), birth_date=text("PatientBirthDate"), sex=text("PatientSex"),
                   accession_number=text("AccessionNumber"), study_date=text("StudyDate"),
                   study_time=text("StudyTime"), institution=text("InstitutionName"),
                   referring_physician=text("ReferringPhysicianName"), study_id=text("StudyID"),
                   modality=text("Modality"), study_description=text("StudyDescription"))


@dataclass(frozen=True, slots=True)
class ObjectUids:
    series_uid: str
    sop_uid: str


def object_uids(*, study_uid: str, revision: int, kind: str, obj: ReportObject) -> ObjectUids:
    """Deterministic series and SOP Instance UIDs of one rendering of one report revision."""
    def uid(level: str) -> str:
        return "2.25." + str(uuid.uuid5(UID_NAMESPACE, f"{study_uid}/{revision}/{kind}/{obj.value}/{level}").int)
    return ObjectUids(series_uid=uid("series"), sop_uid=uid("instance"))


def _signed_at(document: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(str(document["signed_at"]))
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)  # the county signs in UTC (now_utc())
    return at.astimezone(CHINA)


def _reader(document: dict[str, Any]) -> str:
    """The signing reader's name (``reader_name``), or the login when no name was given."""
    return str(document.get("reader_name") or document["reader"])


def _is_addendum(document: dict[str, Any]) -> bool:
    kind = str(document.get("kind", "report"))
    if kind not in ("report", "addendum"):
        raise ValueError(f"document kind must be 'report' or 'addendum', not {kind!r}")
    return kind == "addendum"


def _common(ds: Dataset, study: StudyHeader, *, sop_class: str, uids: ObjectUids, modality: str,
            series_number: int, series_description: str, at: datetime) -> None:
    """Patient, study, series, equipment and SOP common attributes shared by both objects."""
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese names and text exact
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uids.sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = at.strftime("%Y%m%d"), at.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0800"
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = study.birth_date, study.sex
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study.study_uid, study.study_date, study.study_time
    ds.ReferringPhysicianName, ds.StudyID = study.referring_physician, study.study_id
    ds.AccessionNumber = study.accession_number
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, uids.series_uid, series_number
    ds.SeriesDescription = series_description
    ds.Manufacturer, ds.InstitutionName = MANUFACTURER, CENTRE
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = at.strftime("%Y%m%d"), at.strftime("%H%M%S")


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _section(heading: Code, item: Code, text: str) -> ContainerContentItem:
    section = ContainerContentItem(heading, relationship_type=_CONTAINS)
    section.ContentSequence = ContentSequence([TextContentItem(item, text, relationship_type=_CONTAINS)])
    return section


def _observer_name(reader: str) -> PnameContentItem:
    with warnings.catch_warnings():
        # The reader is named by the login name (e.g. 'dr.wang'), a one-component PN
        # by design; highdicom warns about every such name.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name",
                                category=UserWarning)
        return PnameContentItem(PERSON_OBSERVER, reader, relationship_type=_OBS_CONTEXT)


def _content(document: dict[str, Any], signed_json: str, predecessor: ObjectUids | None) -> ContainerContentItem:
    root = ContainerContentItem(REPORT_TITLE, is_content_continuous=False, template_id="2000")
    items: list[Any] = [
        CodeContentItem(LANGUAGE, CHINESE, relationship_type=_CONCEPT_MOD),
        CodeContentItem(OBSERVER_TYPE, PERSON, relationship_type=_OBS_CONTEXT),
        _observer_name(_reader(document)),
    ]
    if predecessor is not None:
        note = (f"补充报告（第 {document['revision']} 版），补充第 {int(document['revision']) - 1} 版报告"
                f"（SOP Instance UID {predecessor.sop_uid}）。")
        items.append(_section(ADDENDUM, COMMENT, note))
    if document.get("critical"):
        items.append(_section(CRITICAL_RESULTS, SUMMARY, CRITICAL_NOTE))
    if str(document.get("findings", "")).strip():
        items.append(_section(FINDINGS, FINDING, str(document["findings"])))
    items.append(_section(IMPRESSIONS, IMPRESSION, str(document["impression"])))
    if str(document.get("advice", "")).strip():
        items.append(_section(RECOMMENDATIONS, RECOMMENDATION, str(document["advice"])))
    items.append(TextContentItem(SIGNED_DOCUMENT, signed_json, relationship_type=_CONTAINS))
    root.ContentSequence = ContentSequence(items)
    return root


def _references(study_uid: str, series: dict[str, list[tuple[str, str]]]) -> Dataset:
    """One study item of a hierarchical SOP instance reference (evidence, predecessors)."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedSeriesSequence = []
    for series_uid, instances in series.items():
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        series_item.ReferencedSOPSequence = []
        for sop_class, sop_uid in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
            series_item.ReferencedSOPSequence.append(ref)
        item.ReferencedSeriesSequence.append(series_item)
    return item


def predecessor_of(document: dict[str, Any]) -> ObjectUids | None:
    """The SR of the revision an addendum follows (revision 1 is the report, later ones addenda)."""
    if not _is_addendum(document):
        return None
    previous = int(document["revision"]) - 1
    if previous < 1:
        raise ValueError("an addendum follows a signed report: its revision is at least 2")
    return object_uids(study_uid=str(document["study_instance_uid"]), revision=previous,
                       kind="report" if previous == 1 else "addendum", obj=ReportObject.SR)


def _check(document: dict[str, Any], study: StudyHeader) -> None:
    if document["study_instance_uid"] != study.study_uid:
        raise ValueError("the report's study_instance_uid is not the study's StudyInstanceUID")
    if not str(document.get("impression", "")).strip():
        raise ValueError("a signed report has an impression (诊断意见)")


def build_sr(*, document: dict[str, Any], study: StudyHeader, signature_b64: str, key_id: str) -> bytes:
    """The signed report as a verified Basic Text SR (TID 2000 shape), DICOM Part 10 bytes.

    The signed JSON (document, key id, signature) rides along in a TEXT item, so the SR
    alone is enough for `relay verify-report`.
    """
    _check(document, study)
    addendum = _is_addendum(document)
    revision, kind = int(document["revision"]), str(document.get("kind", "report"))
    uids = object_uids(study_uid=study.study_uid, revision=revision, kind=kind, obj=ReportObject.SR)
    at = _signed_at(document)
    signed_json = signing.SignedReport(document, key_id, signature_b64).to_json()
    predecessor = predecessor_of(document)
    ds = Dataset()
    _common(ds, study, sop_class=BASIC_TEXT_SR, uids=uids, modality="SR", series_number=9000 + revision,
            series_description="补充报告" if addendum else "诊断报告", at=at)
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag = "COMPLETE", "VERIFIED", "FINAL"
    observer = Dataset()
    observer.VerifyingObserverName = _reader(document)
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = CENTRE
    observer.VerificationDateTime = at.strftime("%Y%m%d%H%M%S") + at.strftime("%z")
    ds.VerifyingObserverSequence = [observer]
    if predecessor is not None:
        ds.PredecessorDocumentsSequence = [
            _references(study.study_uid, {predecessor.series_uid: [(BASIC_TEXT_SR, predecessor.sop_uid)]})]
    if study.evidence:
        by_series: dict[str, list[tuple[str, str]]] = {}
        for series_uid, sop_class, sop_uid in study.evidence:
            by_series.setdefault(series_uid, []).append((sop_class, sop_uid))
        ds.CurrentRequestedProcedureEvidenceSequence = [_references(study.study_uid, by_series)]
    ds.PerformedProcedureCodeSequence = []
    for element in _content(document, signed_json, predecessor):
        ds.add(element)
    return _part10(ds)


def build_encapsulated_pdf(*, pdf: bytes, document: dict[str, Any], study: StudyHeader) -> bytes:
    """The printable report as Encapsulated PDF Storage, in the study, Part 10 bytes."""
    _check(document, study)
    addendum = _is_addendum(document)
    revision, kind = int(document["revision"]), str(document.get("kind", "report"))
    uids = object_uids(study_uid=study.study_uid, revision=revision, kind=kind, obj=ReportObject.PDF)
    at = _signed_at(document)
    title = "补充报告" if addendum else "诊断报告"
    ds = Dataset()
    _common(ds, study, sop_class=ENCAPSULATED_PDF, uids=uids, modality="DOC", series_number=9500 + revision,
            series_description=f"{title} PDF", at=at)
    ds.ConversionType = "WSD"  # workstation: drawn by software, not scanned
    ds.AcquisitionDateTime = at.strftime("%Y%m%d%H%M%S") + at.strftime("%z")
    ds.BurnedInAnnotation = "YES"  # the page shows the patient's name
    ds.DocumentTitle = f"{title} {study.accession_number}".strip()
    ds.ConceptNameCodeSequence = [_code_item(REPORT_TITLE)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)  # the exact length, before the even-length pad
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    return _part10(ds)


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


# ----------------------------------------------------------------------------- PDF

def display_name(pn: str) -> str:
    """A patient name as Chinese readers write it: 'Li^Na=李^娜' -> '李娜', '王^小明' -> '王小明'."""
    groups = pn.split("=")
    ideographic = groups[1] if len(groups) > 1 and groups[1].strip("^ ") else ""
    chosen = ideographic or groups[0]
    parts = [p.strip() for p in chosen.split("^")[:3] if p.strip()]
    if any(_is_cjk(ch) for ch in "".join(parts)):
        return "".join(parts)
    return " ".join(parts)


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002ffff"


def _da(value: str) -> date | None:
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _age(birth: date | None, on: date | None, t: dict[str, str]) -> str:
    if birth is None or on is None or on < birth:
        return ""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return t["years"].format(n=years)
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    return t["months"].format(n=months) if months >= 1 else t["days"].format(n=(on - birth).days)


LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {"report": "影像诊断报告单", "addendum": "补充报告", "name": "姓名", "sex": "性别", "age": "年龄",
              "birth": "出生日期", "pid": "患者ID", "accession": "检查号", "date": "检查日期",
              "modality": "检查类型", "description": "检查项目", "institution": "送检单位",
              "referrer": "申请医生", "findings": "检查所见", "impression": "诊断意见", "advice": "建议",
              "reader": "报告医生", "signed": "签发时间", "at": "{t}（北京时间）",
              "years": "{n}岁", "months": "{n}个月", "days": "{n}天", "revision": "版本",
              "critical": "危急值", "critical_note": "请立即通知临床医生并处理",
              "addendum_note": "本报告是对第 {n} 版报告的补充，请与原报告一并阅读。",
              "key": "电子签名密钥", "verify": "本报告已由报告医生电子签名（Ed25519）；签名可用 relay verify-report 离线校验。",
              "page": "第 {p} 页 / 共 {{nb}} 页", "M": "男", "F": "女", "O": "其他", "": "未知"},
    "en": {"report": "Diagnostic Imaging Report", "addendum": "Addendum", "name": "Name", "sex": "Sex",
           "age": "Age", "birth": "Birth date", "pid": "Patient ID", "accession": "Accession",
           "date": "Study date", "modality": "Modality", "description": "Study", "institution": "Institution",
           "referrer": "Referrer", "findings": "Findings", "impression": "Impression", "advice": "Advice",
           "reader": "Reader", "signed": "Signed", "at": "{t} (Beijing time)",
           "years": "{n} years", "months": "{n} months", "days": "{n} days", "revision": "Revision",
           "critical": "CRITICAL RESULT 危急值", "critical_note": "notify the clinician at once",
           "addendum_note": "This addendum supplements revision {n}; read it with the original report.",
           "key": "Signing key", "verify": "Electronically signed (Ed25519); verify offline with relay verify-report.",
           "page": "Page {p} of {{nb}}", "M": "M", "F": "F", "O": "O", "": "unknown"},
}

_INK = (30, 30, 30)
_MUTED = (110, 110, 110)
_ACCENT = (20, 70, 140)
_RED = (200, 20, 20)


@lru_cache(maxsize=1)
def _font_files() -> tuple[tuple[Path, int], tuple[Path, int]]:
    """(path, index in the collection) of the regular and bold Simplified Chinese faces."""
    from fontTools.ttLib import TTCollection

    found = []
    for weight in ("Regular", "Bold"):
        path = FONT_DIR / f"NotoSansCJK-{weight}.ttc"
        if not path.exists():
            raise RuntimeError(f"{path} is missing: install Debian's fonts-noto-cjk (make peers)")
        names = [f["name"].getDebugName(1) for f in TTCollection(str(path), lazy=True).fonts]
        found.append((path, names.index(FONT_FAMILY)))
    return found[0], found[1]


class _Page(FPDF):
    footer_lines: tuple[str, ...] = ()
    page_label = ""
    running_head = ""
    """Who the page is about, repeated on every continuation page (pages get separated)."""

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font("cjk", size=9)
        self.set_text_color(*_MUTED)
        self.cell(0, 6, self.running_head, new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(*_MUTED)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(3)

    def footer(self) -> None:
        self.set_y(-22)
        self.set_draw_color(*_MUTED)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)
        self.set_font("cjk", size=7.5)
        self.set_text_color(*_MUTED)
        for line in self.footer_lines:
            self.cell(0, 3.8, line, new_x="LMARGIN", new_y="NEXT")
        self.cell(0, 3.8, self.page_label.format(p=self.page_no()), align="R")


def _field(pdf: FPDF, label: str, value: str, width: float) -> None:
    pdf.set_font("cjk", size=9)
    pdf.set_text_color(*_MUTED)
    pdf.cell(19, 6.5, label)
    pdf.set_font("cjk", "B", size=10.5)
    pdf.set_text_color(*_INK)
    pdf.cell(width - 19, 6.5, value or "—")


def _patient_block(pdf: FPDF, document: dict[str, Any], study: StudyHeader, t: dict[str, str]) -> None:
    birth, on = _da(study.birth_date), _da(study.study_date)
    col = (pdf.w - pdf.l_margin - pdf.r_margin) / 3
    rows = [
        [(t["name"], display_name(study.patient_name)), (t["sex"], t.get(study.sex, study.sex)),
         (t["age"], _age(birth, on, t))],
        [(t["pid"], study.patient_id), (t["accession"], study.accession_number),
         (t["birth"], birth.isoformat() if birth else "")],
        [(t["modality"], study.modality), (t["description"], study.study_description),
         (t["date"], on.isoformat() if on else "")],
        [(t["institution"], study.institution or str(document.get("site", ""))),
         (t["referrer"], display_name(study.referring_physician)), (t["revision"], str(document["revision"]))],
    ]
    for row in rows:
        for label, value in row:
            _field(pdf, label, value, col)
        pdf.ln(6.5)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(3)
    if pdf.get_y() + 8 + 2 * 6.6 > pdf.page_break_trigger:  # never a heading alone at the foot
        pdf.add_page()
    pdf.set_font("cjk", "B", size=12)
    pdf.set_text_color(*_ACCENT)
    pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*_INK)


_NO_LINE_START = set("，。、；：？！）》」』】〉”’,.;:?!)%")
"""Chinese line-breaking rule (禁则): these never begin a line; they hang at the end."""
_WORD = re.compile(r"[A-Za-z0-9.%×+\-/]+|\s|.")


def _lines(pdf: FPDF, paragraph: str, width: float) -> list[str]:
    """Break a paragraph between characters (Chinese has no spaces), keeping Latin words and
    numbers like '65HU' whole and never starting a line with closing punctuation."""
    lines, line = [], ""
    for token in _WORD.findall(paragraph):
        if pdf.get_string_width(line + token) <= width or not line or token in _NO_LINE_START:
            line += token
            continue
        lines.append(line.rstrip())
        line = token.lstrip()
    return [*lines, line.rstrip()]


def _body(pdf: FPDF, text: str, *, bold: bool = False) -> None:
    pdf.set_font("cjk", "B" if bold else "", size=11.5 if bold else 11)
    indent, height = 4.0, 6.6
    width = pdf.w - pdf.l_margin - pdf.r_margin - indent
    for paragraph in (text.strip() or "—").splitlines():
        for line in _lines(pdf, paragraph, width):
            if pdf.get_y() + height > pdf.page_break_trigger:
                pdf.add_page()
                pdf.set_font("cjk", "B" if bold else "", size=11.5 if bold else 11)
                pdf.set_text_color(*_INK)
            pdf.set_x(pdf.l_margin + indent)
            pdf.cell(width, height, line, new_x="LMARGIN", new_y="NEXT")


def _banner(pdf: FPDF, text: str, note: str) -> None:
    pdf.ln(2)
    pdf.set_fill_color(*_RED)
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("cjk", "B", size=16)
    pdf.cell(0, 12, f"{text}  ·  {note}", align="C", fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*_INK)


def build_pdf(*, document: dict[str, Any], study: StudyHeader, lang: str = "zh-CN", key_id: str = "",
              signature_b64: str = "") -> bytes:
    """The A4 report a township technician prints for the patient (Chinese fonts embedded).

    ``key_id`` (the signing key, not part of the signed document) is printed in the footer;
    with ``signature_b64`` the signed JSON is attached (see ``attachment``).
    """
    _check(document, study)
    t = LABELS.get(lang) or LABELS["zh-CN"]
    addendum, at = _is_addendum(document), _signed_at(document)
    regular, bold = _font_files()
    pdf = _Page(format="A4", unit="mm")
    pdf.set_margins(18, 15, 18)
    pdf.set_auto_page_break(True, margin=26)
    pdf.add_font("cjk", "", str(regular[0]), collection_font_number=regular[1])
    pdf.add_font("cjk", "B", str(bold[0]), collection_font_number=bold[1])
    pdf.set_creation_date(at)  # the same bytes on every rebuild
    pdf.set_title(f"{t['addendum'] if addendum else t['report']} {study.accession_number}")
    pdf.set_author(_reader(document))
    pdf.set_creator(MANUFACTURER)
    pdf.set_lang(lang)
    pdf.alias_nb_pages()
    if signature_b64:
        attachment.embed(pdf, signing.SignedReport(document, key_id, signature_b64).to_json(), at)
    pdf.footer_lines = (f"{t['key']} {key_id}".strip(), t["verify"],
                        f"Study Instance UID {study.study_uid}")
    pdf.page_label = t["page"]
    pdf.running_head = (f"{t['name']} {display_name(study.patient_name)}    {t['pid']} {study.patient_id}    "
                        f"{t['accession']} {study.accession_number}    {CENTRE}"
                        + (f"    {t['critical']}" if document.get("critical") else ""))
    pdf.add_page()
    _header(pdf, document, t, addendum)
    _patient_block(pdf, document, study, t)
    pdf.set_draw_color(*_ACCENT)
    pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.r_margin, pdf.get_y() + 1)
    pdf.ln(2)
    if document.get("critical"):
        _banner(pdf, t["critical"], t["critical_note"])
    if addendum:
        pdf.ln(2)
        pdf.set_font("cjk", size=10)
        pdf.set_text_color(*_MUTED)
        pdf.multi_cell(0, 6, t["addendum_note"].format(n=int(document["revision"]) - 1),
                       new_x="LMARGIN", new_y="NEXT")
    for key, bold_text in (("findings", False), ("impression", True), ("advice", False)):
        text = str(document.get(key, "") or "")
        if key == "advice" and not text.strip():
            continue
        _heading(pdf, t[key])
        _body(pdf, text, bold=bold_text)
    _signature_block(pdf, document, t, at)
    return bytes(pdf.output())


def _header(pdf: FPDF, document: dict[str, Any], t: dict[str, str], addendum: bool) -> None:
    pdf.set_font("cjk", "B", size=18)
    pdf.set_text_color(*_INK)
    pdf.cell(0, 10, CENTRE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", size=10.5)
    pdf.set_text_color(*_MUTED)
    pdf.cell(0, 6, str(document.get("site", "")), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", "B", size=15)
    pdf.set_text_color(*(_RED if addendum else _ACCENT))
    pdf.cell(0, 10, t["addendum"] if addendum else t["report"], align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(*_ACCENT)
    pdf.set_line_width(0.5)
    pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.r_margin, pdf.get_y() + 1)
    pdf.set_line_width(0.2)
    pdf.ln(4)


def _signature_block(pdf: FPDF, document: dict[str, Any], t: dict[str, str], at: datetime) -> None:
    pdf.ln(6)
    if pdf.get_y() > pdf.h - 45:
        pdf.add_page()
    pdf.set_draw_color(*_MUTED)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(3)
    half = (pdf.w - pdf.l_margin - pdf.r_margin) / 2
    _field(pdf, t["reader"], _reader(document), half)
    _field(pdf, t["signed"], t["at"].format(t=f"{at:%Y-%m-%d %H:%M}"), half)
    pdf.ln(8)

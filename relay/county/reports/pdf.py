"""A signed report as a printable PDF (Chinese first, English available), and that PDF as
DICOM Encapsulated PDF Storage in the study.

Drawn with fpdf2: pure Python, subsets and embeds the OpenType/CFF Noto Sans CJK faces of
Debian's fonts-noto-cjk straight from the .ttc (reportlab's TTFont refuses CFF outlines),
and gives real bold for headings. Pure: only the system CJK font files are read.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fpdf import FPDF
from pydicom.dataset import Dataset

from relay.county.reports import attachment
from relay.county.reports.objects import (
    CENTRE, ENCAPSULATED_PDF, FONT_DIR, FONT_FAMILY, MANUFACTURER, REPORT_TITLE, ReportObject, StudyHeader, _check,
    _code_item, _common, _is_addendum, _part10, _reader, _signed_at, object_uids)
from relay.dicom import signing
from relay.dicom.vocab import ReportKind


def build_encapsulated_pdf(*, pdf: bytes, document: dict[str, Any], study: StudyHeader) -> bytes:
    """The printable report as Encapsulated PDF Storage, in the study, Part 10 bytes."""
    _check(document, study)
    addendum = _is_addendum(document)
    revision, kind = int(document["revision"]), str(document.get("kind", ReportKind.REPORT))
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
              "referrer": "申请医生", "placer": "申请单号", "department": "申请科室", "requested": "申请项目",
              "findings": "检查所见", "impression": "诊断意见", "advice": "建议",
              "reader": "报告医生", "signed": "签发时间", "at": "{t}（北京时间）",
              "years": "{n}岁", "months": "{n}个月", "days": "{n}天", "revision": "版本",
              "critical": "危急值", "critical_note": "请立即通知临床医生并处理",
              "addendum_note": "本报告是对第 {n} 版报告的补充，请与原报告一并阅读。",
              "key": "电子签名密钥", "verify": "本报告已由报告医生电子签名（Ed25519）；签名可用 relay verify-report 离线校验。",
              "page": "第 {p} 页 / 共 {{nb}} 页", "M": "男", "F": "女", "O": "其他", "": "未知"},
    "en": {"report": "Diagnostic Imaging Report", "addendum": "Addendum", "name": "Name", "sex": "Sex",
           "age": "Age", "birth": "Birth date", "pid": "Patient ID", "accession": "Accession",
           "date": "Study date", "modality": "Modality", "description": "Study", "institution": "Institution",
           "referrer": "Referrer", "placer": "Order no.", "department": "Department", "requested": "Requested",
           "findings": "Findings", "impression": "Impression", "advice": "Advice",
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


def accession(document: dict[str, Any], study: StudyHeader) -> str:
    """检查号: the study's Accession Number, else its order's (a study matched by patient and date)."""
    order = document.get("order") or {}
    return study.accession_number or str(order.get("accession_number", ""))


def _patient_block(pdf: FPDF, document: dict[str, Any], study: StudyHeader, t: dict[str, str]) -> None:
    birth, on = _da(study.birth_date), _da(study.study_date)
    col = (pdf.w - pdf.l_margin - pdf.r_margin) / 3
    order: dict[str, Any] = document.get("order") or {}
    referrer = str(order.get("ordering_doctor", "")) or display_name(study.referring_physician)
    rows = [
        [(t["name"], display_name(study.patient_name)), (t["sex"], t.get(study.sex, study.sex)),
         (t["age"], _age(birth, on, t))],
        [(t["pid"], study.patient_id), (t["accession"], accession(document, study)),
         (t["birth"], birth.isoformat() if birth else "")],
        [(t["modality"], study.modality), (t["description"], study.study_description),
         (t["date"], on.isoformat() if on else "")],
        [(t["institution"], study.institution or str(document.get("site", ""))),
         (t["referrer"], referrer), (t["revision"], str(document["revision"]))],
    ]
    if order:
        rows.append([(t["placer"], str(order.get("placer_order_number", ""))),
                     (t["department"], str(order.get("ordering_department", ""))),
                     (t["requested"], str(order.get("procedure_description", "")))])
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
                        f"{t['accession']} {accession(document, study)}    {CENTRE}"
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

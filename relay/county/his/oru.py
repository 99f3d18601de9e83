"""A signed report as an HL7 v2.5 ORU^R01 (built with hl7apy), encoded in the HIS's charset.

Text values are escaped here, not by hl7apy (whose escaping leaves a literal ``\\F\\`` in a
report unescaped and has no line breaks): ``\\ | ^ & ~`` become ``\\E\\ \\F\\ \\S\\ \\T\\ \\R\\`` and
each line break ``\\.br\\``. The PDF goes as an ED value, Base64, which needs no escaping.
The segments and fields written are listed in docs/interfaces/his-out.md.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hl7apy import base_datatypes
from hl7apy.core import Field, Message, Segment

from relay.county.his.content import OutgoingReport

VERSION = "2.5"
SENDING_APPLICATION = "RELAY"
CHARSETS = {"UNICODE UTF-8": "utf-8", "GB 18030-2000": "gb18030"}
"""MSH-18 value -> the Python codec the bytes are encoded with."""
CRITICAL_FLAG = "AA"
"""OBX-8 of the impression of a critical result (危急值): HL7 table 0078 "very abnormal" (the
panic flag for non-numeric results; HH/LL are numeric limits)."""
LOCAL = "99RELAY"
SECTIONS = (("findings", "59776-5", "Findings", "所见"), ("impression", "19005-8", "Impressions", "印象/诊断"),
            ("advice", "18783-1", "Recommendations", "建议"))
PDF_CODE = ("18748-4", "Diagnostic imaging study", "报告PDF")


def escape(text: str) -> str:
    """HL7 v2 escaping of a text value, line breaks as ``\\.br\\``."""
    for char, sequence in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, sequence)
    return re.sub(r"\r\n|\r|\n", r"\\.br\\", text)


def _er7(self: Any, encoding_chars: Any = None) -> str:
    return escape(str(self.value))


# hl7apy picks a value's HL7 type by its class name: these are its types with our escaping.
_TYPES = {kind: type(kind, (getattr(base_datatypes, kind),), {"to_er7": _er7}) for kind in ("ST", "TX", "IS", "ID")}


def ST(value: str) -> Any:  # noqa: N802 - named for the HL7 type
    return _TYPES["ST"](value)


def TX(value: str) -> Any:  # noqa: N802
    return _TYPES["TX"](value)


def IS(value: str) -> Any:  # noqa: N802
    return _TYPES["IS"](value)


def ID(value: str) -> Any:  # noqa: N802
    return _TYPES["ID"](value)


def _ts(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%Y%m%d%H%M%S%z")


def _study_ts(report: OutgoingReport) -> str:
    time = re.sub(r"\D", "", report.study_time.split(".")[0])[:6]
    return (report.study_date + time) if report.study_date else ""


def _ce(segment: Segment, name: str, code: str, text: str, system: str, alt: tuple[str, str, str] | None = None) -> None:
    field = getattr(segment, name)
    field.ce_1, field.ce_2, field.ce_3 = ST(code), ST(text), ID(system)
    if alt:
        field.ce_4, field.ce_5, field.ce_6 = ST(alt[0]), ST(alt[1]), ID(alt[2])


def _msh(msg: Message, *, message_id: str, charset: str, facility: tuple[str, str, str],
         at: datetime, zone: ZoneInfo) -> None:
    msh = msg.msh
    msh.msh_3 = SENDING_APPLICATION
    msh.msh_4.hd_1, msh.msh_5.hd_1 = IS(facility[0]), IS(facility[1])
    if facility[2]:
        msh.msh_6.hd_1 = IS(facility[2])
    msh.msh_7 = _ts(at, zone)
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = ST(message_id)
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    msh.msh_18 = charset


def _name(pn: str, representation: str) -> Field:
    family, _, rest = pn.partition("^")
    given = rest.split("^")[0] if rest else ""
    field = Field("PID_5", version=VERSION)
    field.xpn_1.fn_1 = ST(family)
    if given:
        field.xpn_2 = ST(given)
    field.xpn_7 = "L"
    field.xpn_8 = representation
    return field


def _has_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or ch >= "\U00020000" for ch in text)


def _pid(pid: Segment, report: OutgoingReport) -> None:
    patient = report.patient
    pid.pid_1 = "1"
    if patient.patient_id:
        pid.pid_3.cx_1 = ST(patient.patient_id)
        if patient.issuer:
            pid.pid_3.cx_4.hd_1 = IS(patient.issuer)
    if patient.name:
        pid.add(_name(patient.name, "I" if _has_cjk(patient.name) else "A"))
    if patient.pinyin:
        pid.add(_name(patient.pinyin, "A"))
    if patient.birth_date:
        pid.pid_7 = patient.birth_date
    pid.pid_8 = patient.sex if patient.sex in ("M", "F", "O") else "U"


def _orc(orc: Segment, report: OutgoingReport) -> None:
    orc.orc_1 = "RE"
    if report.order is not None:
        orc.orc_2.ei_1, orc.orc_2.ei_2 = ST(report.order.placer_number), IS(report.order.placer_issuer)
    orc.orc_3.ei_1, orc.orc_3.ei_2 = ST(report.filler_number), IS(SENDING_APPLICATION)
    orc.orc_5 = "CA" if report.order is not None and report.order.cancelled else "CM"


def _obr(obr: Segment, report: OutgoingReport, zone: ZoneInfo) -> None:
    obr.obr_1 = "1"
    if report.order is not None:
        obr.obr_2.ei_1, obr.obr_2.ei_2 = ST(report.order.placer_number), IS(report.order.placer_issuer)
    obr.obr_3.ei_1, obr.obr_3.ei_2 = ST(report.filler_number), IS(SENDING_APPLICATION)
    order = report.order
    code = order.procedure_code if order else ""
    text = (order.procedure_description if order else "") or report.description or report.modality
    if code:
        _ce(obr, "obr_4", code, text, LOCAL)
    else:
        obr.obr_4.ce_2 = ST(text)
    if _study_ts(report):
        obr.obr_7 = _study_ts(report)
    if report.accession:
        obr.obr_18 = ST(report.accession)
    obr.obr_22 = _ts(report.signed_at, zone)
    if report.modality:
        obr.obr_24 = ID(report.modality)
    obr.obr_25 = _status(report)
    obr.obr_32.ndl_1.cnn_1 = ST(report.signer_login)
    if report.signer_name:
        obr.obr_32.ndl_1.cnn_2 = ST(report.signer_name)


def _status(report: OutgoingReport) -> str:
    """F final; C corrected for an addendum (a later signed revision of the same study)."""
    return "C" if report.addendum else "F"


def _text_obx(n: int, section: tuple[str, str, str, str], value: str, report: OutgoingReport) -> Segment:
    name, code, text, chinese = section
    obx = Segment("OBX", version=VERSION)
    obx.obx_1, obx.obx_2 = str(n), "TX"
    _ce(obx, "obx_3", code, text, "LN", (name.upper(), chinese, LOCAL))
    field = Field("OBX_5", datatype="TX", version=VERSION)
    field.value = TX(value)
    obx.add(field)
    if name == "impression" and report.critical:
        obx.obx_8 = CRITICAL_FLAG
    obx.obx_11 = _status(report)
    return obx


def _pdf_obx(n: int, report: OutgoingReport) -> Segment:
    obx = Segment("OBX", version=VERSION)
    obx.obx_1, obx.obx_2 = str(n), "ED"
    _ce(obx, "obx_3", PDF_CODE[0], PDF_CODE[1], "LN", ("PDF", PDF_CODE[2], LOCAL))
    obx.obx_5 = "^application^pdf^Base64^" + base64.b64encode(report.pdf).decode("ascii")
    obx.obx_11 = _status(report)
    return obx


def build_oru(report: OutgoingReport, *, message_id: str, charset: str, facility: tuple[str, str, str],
              at: datetime, zone: ZoneInfo) -> bytes:
    """The ORU^R01 of ``report`` as bytes in ``charset`` (an MSH-18 value of CHARSETS).
    ``facility`` is (MSH-4 sending facility, MSH-5 receiving application, MSH-6 receiving facility)."""
    codec = CHARSETS[charset]
    msg = Message("ORU_R01", version=VERSION)
    _msh(msg, message_id=message_id, charset=charset, facility=facility, at=at, zone=zone)
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    _pid(patient.pid, report)
    visit = patient.add_group("ORU_R01_VISIT")
    visit.pv1.pv1_1, visit.pv1.pv1_2 = "1", "U"
    visit.pv1.pv1_3.pl_1 = IS(report.site_display)
    visit.pv1.pv1_3.pl_4.hd_1 = IS(report.site_name)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    _orc(order.orc, report)
    _obr(order.obr, report, zone)
    n = 0
    for section in SECTIONS:
        value = getattr(report, section[0])
        if value.strip():
            n += 1
            order.add_group("ORU_R01_OBSERVATION").add(_text_obx(n, section, value, report))
    order.add_group("ORU_R01_OBSERVATION").add(_pdf_obx(n + 1, report))
    return str(msg.to_er7()).encode(codec)

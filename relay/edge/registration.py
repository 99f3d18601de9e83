"""Registration (登记) at the township: an order made on the technician's page, for hospitals
without an HIS interface.

The form is checked here (every message Chinese first, naming the field); a good one
becomes a :class:`relay.dicom.orders.Order` with numbers made at the edge:

- accession number ``<code>-YYMMDD-NNNN`` (16 characters at most, the SH limit): ``code``
  is ``edge_site_code`` or, unset, 4 hex digits of the SHA-256 of the site name; NNNN
  counts the site's registrations of the day (local date), skipping any number the cache
  already holds (after a reinstall, the county's snapshot brings the day's numbers back);
- placer order number ``<accession>.<8 random hex>`` with issuer ``site:<site name>``, so
  that two exams never share a key even if an accession number were made twice;
- a new Study Instance UID (``2.25.<uuid>``), which the modality takes from the worklist.

An empty patient ID is allowed (the county keeps such an order unidentified, never joined
to another patient); the name is required.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime

from pydicom.uid import generate_uid

from relay.dicom.orders import Order, OrderSource
from relay.dicom.vocab import Priority

MODALITIES = ("DX", "CR", "CT", "MR", "US", "ECG", "MG", "RF", "XA", "ES", "OT")
"""Exam types the form offers (DICOM modality codes; ECG for the 12-lead waveform)."""
SEXES = {"M": "男", "F": "女", "O": "其他", "": "未知"}
PRIORITIES = {Priority.ROUTINE.value: "常规", Priority.URGENT.value: "加急", Priority.STAT.value: "急诊"}
FIELDS = ("patient_name", "patient_name_pinyin", "patient_id", "patient_sex", "patient_birth_date", "patient_phone",
          "modality", "procedure_description", "clinical_diagnosis", "exam_purpose", "history_summary",
          "ordering_department", "ordering_doctor", "priority")
_FORBIDDEN = re.compile(r"[\\=\x00-\x1f\x7f]")
_PINYIN = re.compile(r"^[A-Za-z][A-Za-z ^'-]*$")
_PHONE = re.compile(r"^[0-9+\- ()]{3,32}$")
SHORT, LONG = 64, 1024


def site_code(site: str, configured: str = "") -> str:
    """The accession prefix: the configured code, else 4 hex digits of the site name's SHA-256."""
    return configured or hashlib.sha256(site.encode()).hexdigest()[:4].upper()


def chinese_pn(name: str) -> str:
    """The name as a PN: as typed, a space between surname and given name becoming '^'
    ('王 小明' -> '王^小明'); without one it stays one component (the surname is not guessed)."""
    return "^".join(name.split()[:2]) if len(name.split()) > 1 else name.strip()


def pinyin_pn(text: str) -> str:
    """'wang xiaoming' -> 'Wang^Xiaoming'; a value with '^' is kept as typed."""
    if "^" in text:
        return text.strip()
    words = text.split()
    return "^".join([words[0].capitalize(), "".join(w.capitalize() for w in words[1:])]) if len(words) > 1 \
        else text.strip().capitalize()


@dataclass(frozen=True, slots=True)
class Checked:
    """A checked form: the order's fields, or the errors by field name (Chinese messages)."""

    values: dict[str, str]
    errors: dict[str, str]


def check_form(form: dict[str, str], *, today: date) -> Checked:
    values = {name: (form.get(name) or "").strip() for name in FIELDS}
    errors: dict[str, str] = {}
    name = values["patient_name"]
    if not name:
        errors["patient_name"] = "请填写姓名。"
    elif len(name) > SHORT or _FORBIDDEN.search(name) or "^" in name:
        errors["patient_name"] = "姓名过长或含有不允许的字符（= \\ ^）。"
    if values["patient_name_pinyin"] and not _PINYIN.match(values["patient_name_pinyin"]):
        errors["patient_name_pinyin"] = "拼音只能包含字母和空格，例如 Wang Xiaoming。"
    if len(values["patient_id"]) > SHORT or _FORBIDDEN.search(values["patient_id"]):
        errors["patient_id"] = "患者ID过长或含有不允许的字符。"
    if values["patient_sex"] not in SEXES:
        errors["patient_sex"] = "请选择性别。"
    birth = values["patient_birth_date"]
    if birth:
        try:
            born = date.fromisoformat(birth)
            values["patient_birth_date"] = born.strftime("%Y%m%d")
            if born > today or born.year < 1900:
                errors["patient_birth_date"] = "出生日期不能晚于今天。"
        except ValueError:
            errors["patient_birth_date"] = "出生日期格式应为 年-月-日，例如 1960-01-02。"
    if values["patient_phone"] and not _PHONE.match(values["patient_phone"]):
        errors["patient_phone"] = "联系电话只能包含数字、+、- 和空格。"
    if values["modality"] not in MODALITIES:
        errors["modality"] = "请选择检查类型。"
    if not values["procedure_description"]:
        errors["procedure_description"] = "请填写检查项目。"
    for key in ("procedure_description", "ordering_department", "ordering_doctor"):
        if len(values[key]) > SHORT or _FORBIDDEN.search(values[key]):
            errors.setdefault(key, f"不能超过 {SHORT} 个字，且不能含有 = \\ 等字符。")
    for key in ("clinical_diagnosis", "exam_purpose", "history_summary"):
        if len(values[key]) > LONG:
            errors[key] = f"不能超过 {LONG} 个字。"
    if values["priority"] not in PRIORITIES:
        errors["priority"] = "请选择优先级。"
    return Checked(values, errors)


def make_order(values: dict[str, str], *, site: str, code: str, sequence: int, now: datetime,
               registered_by: str) -> Order:
    """The order of a checked form, numbered ``sequence`` of the day ``now`` (site's zone)."""
    accession = f"{code}-{now.strftime('%y%m%d')}-{sequence:04d}"
    return Order(
        placer_order_number=f"{accession}.{secrets.token_hex(4)}", placer_issuer=f"site:{site}",
        accession_number=accession, site=site, patient_id=values["patient_id"],
        patient_id_issuer=f"site:{site}" if values["patient_id"] else "",
        patient_name=chinese_pn(values["patient_name"]),
        patient_name_pinyin=pinyin_pn(values["patient_name_pinyin"]) if values["patient_name_pinyin"] else "",
        patient_sex=values["patient_sex"], patient_birth_date=values["patient_birth_date"],
        patient_phone=values["patient_phone"], modality=values["modality"],
        procedure_description=values["procedure_description"], clinical_diagnosis=values["clinical_diagnosis"],
        exam_purpose=values["exam_purpose"], history_summary=values["history_summary"],
        ordering_department=values["ordering_department"], ordering_doctor=values["ordering_doctor"],
        priority=values["priority"], scheduled_at=now.isoformat(timespec="seconds"),
        study_instance_uid=generate_uid(prefix=None), source=OrderSource.REGISTRATION.value,
        extra={"registered_by": registered_by, "registered_at": now.isoformat(timespec="seconds")})


def next_sequence(taken: set[str], *, code: str, now: datetime) -> int:
    """The lowest number of the day after every accession of the day already held."""
    prefix = f"{code}-{now.strftime('%y%m%d')}-"
    used = [int(a[len(prefix):]) for a in taken if a.startswith(prefix) and a[len(prefix):].isdigit()]
    number = max(used, default=0) + 1
    if number > 9999:
        raise ValueError("more than 9999 registrations today")
    return number

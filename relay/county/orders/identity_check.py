"""Whether a study's DICOM identity and an order (申请单) name the same patient.

Pure: values in, a verdict out. A field is compared only when both sides have it; a
present pair that differs is a contradiction (the study is never merged on it). Names are
DICOM PN on both sides: the Chinese characters decide when both sides have them (pinyin is
only a transliteration: 王晓明 and 王小明 are both "Wang Xiaoming"); otherwise the
alphabetic forms, case, space and caret insensitively. A pinyin-only DICOM name against an
order without pinyin cannot be compared, and nothing is guessed: ``name_unverified``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.dicom.header import InstanceMeta


class Flag(enum.StrEnum):
    """What ``Study.order_conflict`` lists: contradictions, and notes a person should see."""

    PATIENT_ID = "patient_id"
    """The DICOM Patient ID differs from the order's."""
    ISSUER = "issuer"
    """The DICOM Issuer of Patient ID differs from the order's."""
    NAME = "name"
    """The names differ (a typo, or another person)."""
    SEX = "sex"
    BIRTH_DATE = "birth_date"
    NAME_UNVERIFIED = "name_unverified"
    """The names could not be compared (pinyin against Chinese without pinyin in the order,
    or no DICOM name): a note when the patient IDs agree, else the study is not linked."""
    ORDER_CANCELLED = "order_cancelled"
    """The order was cancelled (before or after the study was linked to it): a note."""
    AMBIGUOUS = "ambiguous"
    """More than one order of the site has the study's Accession Number."""


NOTES = frozenset({Flag.NAME_UNVERIFIED, Flag.ORDER_CANCELLED})
"""Flags that are not contradictions."""


@dataclass(frozen=True, slots=True)
class DicomIdentity:
    """The patient as the study's own instance names them (decoded text)."""

    patient_id: str = ""
    issuer: str = ""
    """Issuer of Patient ID as sent ("" when none)."""
    name: str = ""
    sex: str = ""
    birth_date: str = ""

    @classmethod
    def of(cls, meta: InstanceMeta | None) -> "DicomIdentity":
        if meta is None:
            return cls()
        return cls(patient_id=meta.patient_id.strip(), issuer=meta.issuer_of_patient_id.strip(),
                   name=meta.patient_name.strip(), sex=meta.patient_sex.strip(),
                   birth_date=meta.patient_birth_date.strip())


@dataclass(frozen=True, slots=True)
class OrderIdentity:
    patient_id: str
    issuer: str
    name: str
    pinyin: str
    sex: str
    birth_date: str


class NameVerdict(enum.Enum):
    SAME = "same"
    DIFFERENT = "different"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class Verdict:
    flags: tuple[Flag, ...]
    """Contradictions and notes, in a stable order."""
    positive: bool
    """Something beyond the match key says it is this patient: equal patient IDs, or equal names."""

    @property
    def contradicts(self) -> bool:
        return any(f not in NOTES for f in self.flags)

    @property
    def clean(self) -> bool:
        """Linkable without a person: no contradiction and some positive agreement."""
        return not self.contradicts and self.positive


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002ffff"


def _compact(text: str) -> str:
    return "".join(text.replace("^", " ").split()).casefold()


def _forms(pn: str, pinyin: str = "") -> tuple[str, str]:
    """(Chinese form, alphabetic form) of a PN, compacted; "" where absent."""
    groups = pn.split("=")
    alpha, ideo = groups[0], (groups[1] if len(groups) > 1 else "")
    han = _compact(ideo) or (_compact(alpha) if any(_is_cjk(c) for c in alpha) else "")
    latin = _compact(pinyin) or ("" if any(_is_cjk(c) for c in alpha) else _compact(alpha))
    return han, latin


def compare_names(dicom_name: str, order_name: str, order_pinyin: str) -> NameVerdict:
    d_han, d_latin = _forms(dicom_name)
    o_han, o_latin = _forms(order_name, order_pinyin)
    if d_han and o_han:
        return NameVerdict.SAME if d_han == o_han else NameVerdict.DIFFERENT
    if d_latin and o_latin:
        return NameVerdict.SAME if d_latin == o_latin else NameVerdict.DIFFERENT
    return NameVerdict.UNVERIFIABLE


def _differ(a: str, b: str) -> bool:
    return bool(a and b) and a != b


def check(dicom: DicomIdentity, order: OrderIdentity) -> Verdict:
    """Compare field by field (see the module docstring)."""
    flags: list[Flag] = []
    if _differ(dicom.patient_id, order.patient_id.strip()):
        flags.append(Flag.PATIENT_ID)
    if _differ(dicom.issuer, order.issuer.strip()):
        flags.append(Flag.ISSUER)
    name = compare_names(dicom.name, order.name, order.pinyin)
    if name is NameVerdict.DIFFERENT:
        flags.append(Flag.NAME)
    if _differ(dicom.sex.upper(), order.sex.strip().upper()):
        flags.append(Flag.SEX)
    if _differ(dicom.birth_date, order.birth_date.strip()):
        flags.append(Flag.BIRTH_DATE)
    if name is NameVerdict.UNVERIFIABLE:
        flags.append(Flag.NAME_UNVERIFIED)
    same_id = bool(dicom.patient_id) and dicom.patient_id == order.patient_id.strip()
    return Verdict(tuple(flags), positive=same_id or name is NameVerdict.SAME)

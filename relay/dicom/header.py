"""Read what the relay needs from a DICOM Part 10 byte string, without pixel data.

The edge reads only the identifiers (``read_ids``) and forwards the bytes untouched;
the county worker reads the patient/study/series attributes (``read_meta``), decoded
with the object's Specific Character Set (GB18030, GBK, ISO_IR 192 ... as pydicom
knows them), so Chinese names come out exact.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag

from relay.dicom.keys import check_uid


class InvalidInstance(ValueError):
    """The bytes are not a DICOM instance the relay can carry; the message says why.

    ``attribute`` names the missing or invalid attribute when the bytes did parse as a
    dataset (a DIMSE "does not match SOP class" case), and is None when they did not.
    """

    def __init__(self, message: str, *, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute


_ID_TAGS = [
    Tag(0x0008, 0x0016),  # SOPClassUID
    Tag(0x0008, 0x0018),  # SOPInstanceUID
    Tag(0x0020, 0x000D),  # StudyInstanceUID
    Tag(0x0020, 0x000E),  # SeriesInstanceUID
]


@dataclass(frozen=True, slots=True)
class InstanceIds:
    """The identifiers that route one instance."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class InstanceMeta:
    """Decoded attributes the county indexes. Text is already Unicode."""

    ids: InstanceIds
    specific_character_set: str
    patient_name: str
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    institution_name: str
    instance_number: int | None


def _parse(data: bytes, *, specific_tags: list[BaseTag] | None) -> Dataset:
    try:
        return pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=specific_tags, force=False
        )
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InvalidInstance(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
    if not value:
        raise InvalidInstance(f"{keyword} is missing", attribute=keyword)
    try:
        return check_uid(value)
    except ValueError as exc:
        raise InvalidInstance(f"{keyword} is not a valid UID", attribute=keyword) from exc


def ids_from_dataset(ds: Dataset) -> InstanceIds:
    """The routing identifiers of an already parsed dataset."""
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    return InstanceIds(
        sop_class_uid=_uid(ds, "SOPClassUID"),
        sop_uid=_uid(ds, "SOPInstanceUID"),
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=ts,
    )


def read_ids(data: bytes) -> InstanceIds:
    """Parse only the four routing UIDs; raise InvalidInstance naming what is wrong."""
    return ids_from_dataset(_parse(data, specific_tags=_ID_TAGS))


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # a value that fails to decode is shown as empty, not fatal
        return ""
    if value is None:
        return ""
    return str(value).strip().rstrip("\x00")


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _charset(ds: Dataset) -> str:
    value = ds.get("SpecificCharacterSet", "")
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return "\\".join(str(v) for v in value)
    return str(value or "")


def read_meta(data: bytes) -> InstanceMeta:
    """Parse the header (no pixel data) and decode the attributes the index needs."""
    ds = _parse(data, specific_tags=None)
    ds.decode()
    return InstanceMeta(
        ids=ids_from_dataset(ds),
        specific_character_set=_charset(ds),
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        body_part=_text(ds, "BodyPartExamined"),
        institution_name=_text(ds, "InstitutionName"),
        instance_number=_int(ds, "InstanceNumber"),
    )

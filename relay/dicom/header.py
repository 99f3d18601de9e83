"""Read what the relay needs from a DICOM Part 10 byte string, without pixel data.

The edge reads only the identifiers (``read_ids``) and forwards the bytes untouched;
the county worker reads the patient/study/series attributes (``read_meta``), decoded
with the object's Specific Character Set (GB18030, GBK, ISO_IR 192 ... as pydicom
knows them), so Chinese names come out exact.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import AllTransferSyntaxes
from pydicom.valuerep import VR

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
    """Parse only the four routing UIDs; raise InvalidInstance naming what is wrong.

    The common case (Explicit VR Little Endian, including every encapsulated syntax) is
    read by ``scan_ids``, a direct walk of the top-level elements that costs ~15 us
    instead of pydicom's ~400 us on the edge's C-STORE path; anything it does not
    fully understand goes to pydicom, which also gives the errors their wording."""
    fast = scan_ids(data)
    ids = fast if fast is not None else ids_from_dataset(_parse(data, specific_tags=_ID_TAGS))
    media = _meta_sop_uid(data)
    if media is not None and media != ids.sop_uid:
        # PS3.10 7.1: the file meta names the instance the file holds. A file naming another
        # one is refused: a reader of the meta alone (a viewer, a DICOMDIR) would be misled.
        raise InvalidInstance("MediaStorageSOPInstanceUID (0002,0003) differs from SOPInstanceUID",
                              attribute="MediaStorageSOPInstanceUID")
    return ids


def _meta_sop_uid(data: bytes) -> str | None:
    """The file meta's Media Storage SOP Instance UID (always Explicit VR LE), if readable."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    offset = 132
    while (element := _element(data, offset)) is not None and element[0] >> 16 == 0x0002:
        tag, value, length = element
        if tag == 0x00020003:
            return data[value:value + length].rstrip(b"\0 ").decode("ascii", "replace").strip()
        offset = value + length
    return None


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
"""Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)."""
_SHORT_VRS = frozenset(vr.value.encode() for vr in VR) - _LONG_VRS - {b"NONE"}
"""The other VRs pydicom knows: a 2-byte length. Anything else is not read here."""
_EXPLICIT_LE = frozenset(str(ts) for ts in AllTransferSyntaxes
                         if ts.is_little_endian and not ts.is_implicit_VR and not ts.is_deflated)
"""Known transfer syntaxes whose dataset is Explicit VR Little Endian as stored (every
encapsulated one); implicit VR, big endian, deflated or unknown: left to pydicom."""
_WANTED = {0x00080016: "sop_class_uid", 0x00080018: "sop_uid", 0x0020000D: "study_uid",
           0x0020000E: "series_uid"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 8


def _element(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(tag, value offset, value length) of the Explicit VR LE element at ``offset``."""
    if offset + 8 > len(data):
        return None
    group, elem = struct.unpack_from("<HH", data, offset)
    tag = group << 16 | elem
    if group == 0xFFFE:  # item and delimiters have no VR
        return tag, offset + 8, struct.unpack_from("<I", data, offset + 4)[0]
    vr = data[offset + 4:offset + 6]
    if vr in _LONG_VRS:
        if offset + 12 > len(data):
            return None
        return tag, offset + 12, struct.unpack_from("<I", data, offset + 8)[0]
    if vr not in _SHORT_VRS:
        return None
    return tag, offset + 8, struct.unpack_from("<H", data, offset + 6)[0]


def _skip_undefined(data: bytes, offset: int, end_tag: int, depth: int) -> int | None:
    """Offset after the delimiter ``end_tag`` of an undefined-length sequence or item
    whose content starts at ``offset``; None if anything is not as expected."""
    if depth > _MAX_DEPTH:
        return None
    while True:
        element = _element(data, offset)
        if element is None:
            return None
        tag, value, length = element
        if tag == end_tag:
            return value
        if length == _UNDEFINED:
            inner_end = _ITEM_END if tag == _ITEM else _SEQUENCE_END
            after = _skip_undefined(data, value, inner_end, depth + 1)
            if after is None:
                return None
            offset = after
        else:
            offset = value + length


def _meta_transfer_syntax(data: bytes) -> tuple[str, int] | None:
    """The file meta's Transfer Syntax UID and where the dataset starts."""
    if len(data) < 144 or data[128:140] != b"DICM\x02\x00\x00\x00UL\x04\x00":
        return None  # not a (0002,0000) UL of 4 bytes first
    end = 144 + struct.unpack_from("<I", data, 140)[0]
    offset, syntax = 144, None
    while offset < end:
        element = _element(data, offset)
        if element is None or element[0] >> 16 != 0x0002:
            return None
        tag, value, length = element
        if tag == 0x00020010:
            if data[offset + 4:offset + 6] != b"UI":
                return None
            syntax = data[value:value + length].rstrip(b"\0 ").decode("ascii", "replace")
        offset = value + length
    return (syntax, end) if syntax and offset == end else None


def scan_ids(data: bytes) -> InstanceIds | None:
    """The routing UIDs of an Explicit VR Little Endian Part 10 file, by walking its
    top-level elements (lengths checked, sequences skipped) up to the pixel data, as
    pydicom's ``stop_before_pixels`` read does; None whenever the bytes are anything
    but a regular dataset of that kind (then ``read_ids`` asks pydicom, which also
    words the error). Never more lenient than pydicom: a fuzz test holds it to that."""
    meta = _meta_transfer_syntax(data)
    if meta is None or meta[0] not in _EXPLICIT_LE:
        return None
    syntax, offset = meta
    found: dict[str, str] = {}
    previous = -1
    while offset < len(data):
        element = _element(data, offset)
        if element is None:
            return None
        tag, value, length = element
        if tag <= previous or tag >> 16 == 0xFFFE:
            return None
        if tag >= 0x7FE00008:  # float, double or integer pixel data: where pydicom stops
            break
        previous = tag
        if length == _UNDEFINED:
            after = _skip_undefined(data, value, _SEQUENCE_END, 1)
            if after is None:
                return None
            offset = after
            continue
        if value + length > len(data):
            return None
        name = _WANTED.get(tag)
        if name is not None:
            if data[offset + 4:offset + 6] != b"UI":
                return None
            text = data[value:value + length].rstrip(b"\0 ").decode("ascii", "replace").strip()
            try:
                found[name] = check_uid(text)
            except ValueError:
                return None
        elif tag == 0x00080005 and (data[offset + 4:offset + 6] != b"CS"
                                    or b"\0" in data[value:value + length].rstrip(b"\0 ")):
            return None  # pydicom always decodes the character set, and fails on this
        offset = value + length
    if len(found) != len(_WANTED):
        return None
    return InstanceIds(transfer_syntax_uid=syntax, **found)


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
    ds = parse_header(data)
    ds.decode()
    return meta_of_dataset(ds, ids_from_dataset(ds))


def parse_header(data: bytes) -> Dataset:
    """The whole header (no pixel data) as a pydicom dataset; InvalidInstance if it is not one."""
    return _parse(data, specific_tags=None)


def meta_of_dataset(ds: Dataset, ids: InstanceIds) -> InstanceMeta:
    """The attributes the index needs, from a decoded dataset (parsed, or from DICOM JSON)."""
    return InstanceMeta(
        ids=ids,
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

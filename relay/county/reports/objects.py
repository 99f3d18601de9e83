"""What goes back to the township, the parts its renderings share: the study header,
deterministic UIDs, the DICOM attributes common to the SR and the Encapsulated PDF.

The renderings themselves: ``reports/sr.py`` (DICOM Basic Text SR) and ``reports/pdf.py``
(the printable PDF and its Encapsulated PDF). Pure: no database, no network. The signed
JSON document stays the verifiable artefact; these are renderings of it. Every object
gets UIDs derived from (study, revision, kind, object), so re-building after a crash
yields byte-identical objects with the same SOP Instance UIDs: the township PACS sees
a duplicate, never a second report.
"""

from __future__ import annotations

import enum
import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from highdicom.sr import RelationshipTypeValues
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian

from relay.dicom.vocab import ReportKind

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
    kind = str(document.get("kind", ReportKind.REPORT))
    if kind not in (ReportKind.REPORT, ReportKind.ADDENDUM):
        raise ValueError(f"document kind must be 'report' or 'addendum', not {kind!r}")
    return kind == ReportKind.ADDENDUM


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


def _check(document: dict[str, Any], study: StudyHeader) -> None:
    if document["study_instance_uid"] != study.study_uid:
        raise ValueError("the report's study_instance_uid is not the study's StudyInstanceUID")
    if not str(document.get("impression", "")).strip():
        raise ValueError("a signed report has an impression (诊断意见)")


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item

"""DICOM JSON (PS3.18 F.2) for search results built from the index, not from files."""

from __future__ import annotations

from typing import Any

JsonDataset = dict[str, dict[str, Any]]


def _put(ds: JsonDataset, tag: str, vr: str, *values: Any) -> None:
    present = [v for v in values if v not in (None, "")]
    ds[tag] = {"vr": vr, "Value": present} if present else {"vr": vr}


def person_name(value: str) -> dict[str, str]:
    """A PN value "Li^Na=李^娜" as its component groups (Alphabetic, Ideographic, Phonetic)."""
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups) if group}


def study_json(*, study: Any, patient: Any, n_series: int, n_instances: int, base_url: str) -> JsonDataset:
    ds: JsonDataset = {}
    _put(ds, "00080005", "CS", "ISO_IR 192")
    _put(ds, "00080020", "DA", study.study_date)
    _put(ds, "00080030", "TM", study.study_time)
    _put(ds, "00080050", "SH", study.accession_number)
    _put(ds, "00080061", "CS", *[m for m in study.modalities.split("\\") if m])
    _put(ds, "00081030", "LO", study.description)
    _put(ds, "00081190", "UR", f"{base_url}/studies/{study.study_uid}")
    ds["00100010"] = {"vr": "PN", "Value": [person_name(patient.name)]} if patient.name else {"vr": "PN"}
    _put(ds, "00100020", "LO", patient.patient_id)
    _put(ds, "00100021", "LO", "" if patient.issuer.startswith("site:") else patient.issuer)
    _put(ds, "00100030", "DA", patient.birth_date)
    _put(ds, "00100040", "CS", patient.sex)
    _put(ds, "0020000D", "UI", study.study_uid)
    _put(ds, "00201206", "IS", n_series)
    _put(ds, "00201208", "IS", n_instances)
    return ds


def series_json(*, study_uid: str, series: Any, n_instances: int, base_url: str) -> JsonDataset:
    ds: JsonDataset = {}
    _put(ds, "00080005", "CS", "ISO_IR 192")
    _put(ds, "00080060", "CS", series.modality)
    _put(ds, "0008103E", "LO", series.description)
    _put(ds, "00081190", "UR", f"{base_url}/studies/{study_uid}/series/{series.series_uid}")
    _put(ds, "0020000D", "UI", study_uid)
    _put(ds, "0020000E", "UI", series.series_uid)
    _put(ds, "00200011", "IS", series.series_number)
    _put(ds, "00201209", "IS", n_instances)
    return ds


def instance_json(*, instance: Any, base_url: str) -> JsonDataset:
    ds: JsonDataset = {}
    _put(ds, "00080016", "UI", instance.sop_class_uid)
    _put(ds, "00080018", "UI", instance.sop_uid)
    _put(ds, "00081190", "UR", f"{base_url}/studies/{instance.study_uid}/series/"
         f"{instance.series_uid}/instances/{instance.sop_uid}")
    _put(ds, "0020000D", "UI", instance.study_uid)
    _put(ds, "0020000E", "UI", instance.series_uid)
    _put(ds, "00200013", "IS", instance.instance_number)
    _put(ds, "00083002", "UI", instance.transfer_syntax_uid)
    return ds

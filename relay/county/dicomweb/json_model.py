"""DICOM JSON (PS3.18 F.2) for search results built from the index, not from files."""

from __future__ import annotations

from typing import Any

from relay.county.studies.identity import shown_issuer

JsonDataset = dict[str, dict[str, Any]]


def _put(ds: JsonDataset, tag: str, vr: str, *values: Any) -> None:
    present = [v for v in values if v not in (None, "")]
    ds[tag] = {"vr": vr, "Value": present} if present else {"vr": vr}


def person_name(value: str) -> dict[str, str]:
    """A PN value "Li^Na=李^娜" as its component groups (Alphabetic, Ideographic, Phonetic)."""
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups) if group}


def _value(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


_UNICODE = {"vr": "CS", "Value": ["ISO_IR 192"]}  # JSON text is Unicode, whatever the files said


def study_json(row: Any, *, base_url: str) -> JsonDataset:
    """One QIDO-RS study result from a row of the search (named as in
    ``repository.search_studies``). Built directly from the row's strings: a search
    returns up to a thousand of these, so no per-attribute helper calls."""
    modalities = [m for m in row.modalities.split("\\") if m]
    issuer = shown_issuer(row.issuer)
    return {
        "00080005": _UNICODE,
        "00080020": _value("DA", row.study_date),
        "00080030": _value("TM", row.study_time),
        "00080050": _value("SH", row.accession_number),
        "00080061": {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"},
        "00081030": _value("LO", row.description),
        "00081190": {"vr": "UR", "Value": [f"{base_url}/studies/{row.study_uid}"]},
        "00100010": ({"vr": "PN", "Value": [person_name(row.patient_name)]} if row.patient_name
                     else {"vr": "PN"}),
        "00100020": _value("LO", row.patient_id),
        "00100021": _value("LO", issuer),
        "00100030": _value("DA", row.birth_date),
        "00100040": _value("CS", row.sex),
        "0020000D": {"vr": "UI", "Value": [row.study_uid]},
        "00201206": {"vr": "IS", "Value": [row.n_series]},
        "00201208": {"vr": "IS", "Value": [row.n_instances]},
    }


_Optional = dict[str, tuple[str, str, str]]
STUDY_INCLUDES: _Optional = {
    "StudyDate": ("00080020", "DA", "study_date"), "StudyTime": ("00080030", "TM", "study_time"),
    "AccessionNumber": ("00080050", "SH", "accession_number"),
    "StudyDescription": ("00081030", "LO", "description"),
}
"""Study attributes a series or instance search returns when includefield names them:
keyword -> (tag, VR, attribute of the Study row)."""
SERIES_OPTIONAL: _Optional = {"BodyPartExamined": ("00180015", "CS", "body_part")}
"""Optional series attributes the index holds: returned for includefield=all or by name."""
SERIES_INCLUDES: _Optional = {"SeriesDescription": ("0008103E", "LO", "description"), **SERIES_OPTIONAL}


def _include(ds: JsonDataset, row: Any, table: _Optional, wanted: frozenset[str] | bool) -> None:
    """Put the attributes of ``table`` that are ``wanted`` (True: all of them) from ``row``."""
    for keyword, (tag, vr, attribute) in table.items():
        if wanted is True or (wanted and keyword in wanted):
            _put(ds, tag, vr, getattr(row, attribute))


def _include_name(ds: JsonDataset, study: Any, wanted: frozenset[str]) -> None:
    """PatientName when includefield names it: the study's own (not its patient's first)."""
    if "PatientName" in wanted:
        name = study.patient_name
        ds["00100010"] = {"vr": "PN", "Value": [person_name(name)]} if name else {"vr": "PN"}


def series_json(*, study: Any, series: Any, n_instances: int, base_url: str,
                includes: frozenset[str] = frozenset()) -> JsonDataset:
    """One QIDO-RS series result; ``includes``: the includefield keywords (``all`` among them:
    every optional series attribute the index holds)."""
    ds: JsonDataset = {}
    _put(ds, "00080005", "CS", "ISO_IR 192")
    _put(ds, "00080060", "CS", series.modality)
    _put(ds, "0008103E", "LO", series.description)
    _put(ds, "00081190", "UR", f"{base_url}/studies/{study.study_uid}/series/{series.series_uid}")
    _put(ds, "0020000D", "UI", study.study_uid)
    _put(ds, "0020000E", "UI", series.series_uid)
    _put(ds, "00200011", "IS", series.series_number)
    _put(ds, "00201209", "IS", n_instances)
    _include(ds, series, SERIES_OPTIONAL, True if "all" in includes else includes)
    _include(ds, study, STUDY_INCLUDES, includes)
    _include_name(ds, study, includes)
    return ds


def instance_json(*, study: Any, series: Any, instance: Any, base_url: str,
                  includes: frozenset[str] = frozenset()) -> JsonDataset:
    """One QIDO-RS instance result, with its series' Modality and SeriesNumber (PS3.18
    10.6.3.3.3 asks for them when a study's instances are searched); ``includes`` adds
    series and study attributes by name."""
    ds: JsonDataset = {}
    _put(ds, "00080016", "UI", instance.sop_class_uid)
    _put(ds, "00080018", "UI", instance.sop_uid)
    _put(ds, "00080060", "CS", series.modality)
    _put(ds, "00081190", "UR", f"{base_url}/studies/{instance.study_uid}/series/"
         f"{instance.series_uid}/instances/{instance.sop_uid}")
    _put(ds, "0020000D", "UI", instance.study_uid)
    _put(ds, "0020000E", "UI", instance.series_uid)
    _put(ds, "00200011", "IS", series.series_number)
    _put(ds, "00200013", "IS", instance.instance_number)
    _put(ds, "00083002", "UI", instance.transfer_syntax_uid)
    _include(ds, series, SERIES_INCLUDES, includes)
    _include(ds, study, STUDY_INCLUDES, includes)
    _include_name(ds, study, includes)
    return ds

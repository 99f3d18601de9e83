"""The committed sample DICOM files: reproducible, described exactly by their manifest,
and readable by an independent toolkit (DCMTK), names included.

Other tests feed these files to the edge and compare what the county shows against
``sample_dicom/manifest.json``; these tests are what make that comparison meaningful.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID
from pydicom.waveforms import multiplex_array

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
MANIFEST: dict[str, Any] = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
ENTRIES: list[dict[str, Any]] = MANIFEST["files"]
IMAGE_ENTRIES = [e for e in ENTRIES if e["pixel_shape"] is not None]
MAX_TOTAL_BYTES = 10 * 1024 * 1024

# The contract, written out once more by hand so that a generator change cannot move
# the manifest and the files together without a reviewer seeing it here.
EXPECTED_NAMES = {
    "cr_chest": ("GB18030", "王^小明"),
    "ct_head": ("ISO_IR 192", "Li^Na=李^娜"),
    "us_multiframe": ("", "ZHAO^LEI"),
    "ecg_12lead": ("GB18030", "陈^思喆"),
    "compressed": ("ISO_IR 192", "孙^丽华"),
}

SCPECG_LEADS = {
    "I": "5.6.3-9-1", "II": "5.6.3-9-2", "III": "5.6.3-9-61", "aVR": "5.6.3-9-62",
    "aVL": "5.6.3-9-63", "aVF": "5.6.3-9-64", "V1": "5.6.3-9-3", "V2": "5.6.3-9-4",
    "V3": "5.6.3-9-5", "V4": "5.6.3-9-6", "V5": "5.6.3-9-7", "V6": "5.6.3-9-8",
}


def _committed_outputs() -> list[str]:
    """Paths (relative, POSIX) of everything in sample_dicom/ that the generator writes."""
    return sorted(
        p.relative_to(SAMPLES).as_posix()
        for p in SAMPLES.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    )


def _dcmtk(tool: str) -> str:
    """The path of a DCMTK tool; fail (never skip) when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"DCMTK tool {tool!r} is not on PATH; install dcmtk (apt-get install dcmtk)")
    return path


def _read(entry: dict[str, Any], **kwargs: Any) -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLES / entry["path"], **kwargs)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh run of the generator into an empty folder."""
    out = tmp_path_factory.mktemp("regenerated")
    subprocess.run(
        [sys.executable, "-B", str(SAMPLES / "generate.py"), "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    return out


def test_generator_writes_exactly_the_committed_files(regenerated: Path) -> None:
    written = sorted(p.relative_to(regenerated).as_posix() for p in regenerated.rglob("*") if p.is_file())
    assert written == _committed_outputs()


@pytest.mark.parametrize("relative", _committed_outputs())
def test_regenerated_file_is_byte_identical(regenerated: Path, relative: str) -> None:
    assert (regenerated / relative).read_bytes() == (SAMPLES / relative).read_bytes(), (
        f"{relative} differs from a fresh run; run sample_dicom/generate.py and commit the result"
    )


def test_manifest_lists_every_dicom_file() -> None:
    on_disk = sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.dcm"))
    assert sorted(e["path"] for e in ENTRIES) == on_disk


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["path"])
def test_manifest_entry_matches_file(entry: dict[str, Any]) -> None:
    data = (SAMPLES / entry["path"]).read_bytes()
    ds = _read(entry, stop_before_pixels=True)
    charset = ds.get("SpecificCharacterSet", "")
    assert data[128:132] == b"DICM"
    assert len(data) == entry["size_bytes"]
    actual = {
        "sop_class_uid": ds.SOPClassUID,
        "sop_instance_uid": ds.SOPInstanceUID,
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "modality": ds.Modality,
        "transfer_syntax_uid": ds.file_meta.TransferSyntaxUID,
        "specific_character_set": charset,
        "patient_name": str(ds.PatientName),
        "patient_id": ds.PatientID,
        "accession_number": ds.AccessionNumber,
        "institution_name": ds.InstitutionName,
        "study_description": ds.StudyDescription,
        "study_date": ds.StudyDate,
        "series_number": ds.SeriesNumber,
        "instance_number": ds.InstanceNumber,
    }
    assert actual == {key: entry[key] for key in actual}
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["path"])
def test_patient_name_is_the_documented_unicode(entry: dict[str, Any]) -> None:
    charset, name = EXPECTED_NAMES[entry["path"].split("/")[0]]
    assert (entry["specific_character_set"], entry["patient_name"]) == (charset, name)
    assert f"`{name}`" in (SAMPLES / "README.md").read_text(encoding="utf-8")


def test_uids_are_valid_and_studies_and_patients_distinct() -> None:
    for entry in ENTRIES:
        for key in ("sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            assert UID(entry[key]).is_valid, (entry["path"], key)
    assert len({e["sop_instance_uid"] for e in ENTRIES}) == len(ENTRIES)
    patients_by_study: dict[str, set[tuple[str, str]]] = {}
    for entry in ENTRIES:
        patient = (entry["patient_id"], entry["patient_name"])
        patients_by_study.setdefault(entry["study_instance_uid"], set()).add(patient)
    assert len(patients_by_study) == len(EXPECTED_NAMES)
    assert all(len(patients) == 1 for patients in patients_by_study.values())
    patients = [patient for (patient,) in patients_by_study.values()]
    assert len({pid for pid, _ in patients}) == len({name for _, name in patients}) == len(EXPECTED_NAMES)

@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["path"])
def test_dcmdump_reads_file_without_complaint(entry: dict[str, Any]) -> None:
    result = subprocess.run(
        [_dcmtk("dcmdump"), str(SAMPLES / entry["path"])], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stderr == b""


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["path"])
def test_dcmtk_decodes_patient_name_to_manifest_value(entry: dict[str, Any]) -> None:
    result = subprocess.run(
        [_dcmtk("dcmdump"), "+U8", "+P", "PatientName", str(SAMPLES / entry["path"])],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode(errors="replace")
    match = re.search(r"\(0010,0010\) PN \[(.*)\]", result.stdout.decode("utf-8"))
    assert match is not None, result.stdout
    assert match.group(1) == entry["patient_name"]


@pytest.mark.parametrize("entry", IMAGE_ENTRIES, ids=lambda e: e["path"])
def test_pixel_data_decodes_to_expected_shape(entry: dict[str, Any]) -> None:
    ds = _read(entry)
    pixels = ds.pixel_array
    assert pixels.shape == tuple(entry["pixel_shape"])
    assert int(pixels.max()) > int(pixels.min())


def test_rle_slice_decodes_the_same_in_dcmtk_and_pydicom(tmp_path: Path) -> None:
    (entry,) = [e for e in ENTRIES if e["transfer_syntax_uid"] == "1.2.840.10008.1.2.5"]
    plain = tmp_path / "decompressed.dcm"
    result = subprocess.run(
        [_dcmtk("dcmdrle"), str(SAMPLES / entry["path"]), str(plain)], capture_output=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode(errors="replace")
    np.testing.assert_array_equal(pydicom.dcmread(plain).pixel_array, _read(entry).pixel_array)


@pytest.fixture(scope="module")
def ecg() -> pydicom.Dataset:
    (entry,) = [e for e in ENTRIES if e["modality"] == "ECG"]
    return _read(entry)


def test_ecg_has_twelve_scpecg_leads_at_500_hz_for_10_s(ecg: pydicom.Dataset) -> None:
    (group,) = ecg.WaveformSequence
    assert float(group.SamplingFrequency) == 500.0
    assert (group.NumberOfWaveformSamples, group.NumberOfWaveformChannels) == (5000, 12)
    assert (group.WaveformBitsAllocated, group.WaveformSampleInterpretation) == (16, "SS")
    sources = {
        ch.ChannelLabel: (source.CodingSchemeDesignator, source.CodeValue)
        for ch in group.ChannelDefinitionSequence
        for source in ch.ChannelSourceSequence
    }
    assert sources == {label: ("SCPECG", value) for label, value in SCPECG_LEADS.items()}
    assert multiplex_array(ecg, 0, as_raw=True).shape == (5000, 12)


def test_ecg_limb_leads_obey_einthoven_and_goldberger(ecg: pydicom.Dataset) -> None:
    labels = [ch.ChannelLabel for ch in ecg.WaveformSequence[0].ChannelDefinitionSequence]
    raw = multiplex_array(ecg, 0, as_raw=True).astype(np.int64)
    lead = {label: raw[:, i] for i, label in enumerate(labels)}
    np.testing.assert_array_equal(lead["III"], lead["II"] - lead["I"])
    assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() <= 0.5
    assert np.abs(lead["aVL"] - (lead["I"] - lead["III"]) / 2).max() <= 0.5
    assert np.abs(lead["aVF"] - (lead["II"] + lead["III"]) / 2).max() <= 0.5


def test_ecg_reports_heart_rate_72(ecg: pydicom.Dataset) -> None:
    rates = [
        float(item.NumericValue)
        for item in ecg.WaveformAnnotationSequence
        if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence[0].CodeValue == "2:16770"
    ]
    assert rates == [72.0]


def test_samples_stay_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < MAX_TOTAL_BYTES

"""Small, valid DICOM instances made in the test, so the edge tests need no fixtures
on disk: a CT slice (any transfer syntax, RLE included) and a 12-lead ECG.

Patient attributes are deliberately recognisable (``PATIENT_NAME``, ``PATIENT_ID``)
so tests can assert they never reach a log line.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    TwelveLeadECGWaveformStorage,
)

PATIENT_NAME = "张^三丰"
PATIENT_ID = "PID-SECRET-4711"


def _base(sop_class: str, *, study_uid: str | None, series_uid: str | None,
          modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = modality
    ds.StudyDate = "20240501"
    ds.InstanceNumber = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def ct_dataset(*, study_uid: str | None = None, series_uid: str | None = None,
               transfer_syntax: UID = ExplicitVRLittleEndian, seed: int = 0) -> Dataset:
    """A 32x32 12-bit CT slice in ``transfer_syntax`` (uncompressed or RLE Lossless)."""
    ds = _base(CTImageStorage, study_uid=study_uid, series_uid=series_uid, modality="CT")
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = (np.random.default_rng(seed).integers(0, 4096, (32, 32))).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, pixels)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def ecg_dataset(*, seconds: float = 1.0, rate: int = 500) -> Dataset:
    """A 12-lead resting ECG (one multiplex group, 16-bit signed samples)."""
    ds = _base(TwelveLeadECGWaveformStorage, study_uid=None, series_uid=None, modality="ECG")
    samples = int(seconds * rate)
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = rate
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.ChannelDefinitionSequence = Sequence([_channel(lead) for lead in _LEADS])
    t = np.arange(samples) / rate
    leads = [(200 * np.sin(2 * np.pi * 1.2 * t + i)).astype(np.int16) for i in range(12)]
    group.WaveformData = np.stack(leads, axis=1).tobytes()
    ds.WaveformSequence = Sequence([group])
    return ds


_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _channel(lead: str) -> Dataset:
    source = Dataset()
    source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = (
        f"lead-{lead}", "99TEST", f"Lead {lead}")
    channel = Dataset()
    channel.ChannelSourceSequence = Sequence([source])
    channel.ChannelSensitivity = 1
    channel.ChannelSampleSkew = 0
    channel.WaveformBitsStored = 16
    return channel


def write_part10(ds: Dataset, path: Path) -> Path:
    """Save ``ds`` as a DICOM Part 10 file in its file meta's transfer syntax."""
    ds.save_as(path, enforce_file_format=True)
    return path


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` as Part 10 bytes, the form ``Spool.store`` receives from the SCP."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dataset_part(path: Path) -> bytes:
    """The bytes after the file meta group: what travels in a C-STORE, unchanged."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]

"""A deterministic CT series for the ingest benchmark and the edge crash tests.

Same seed, same files, byte for byte: UIDs come from ``generate_uid`` with fixed
entropy sources and the pixels from a seeded generator, so two runs (or the edge and
DCMTK's storescp in one run) receive exactly the same instances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _uid(seed: str, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=[seed, *map(str, parts)]))


def ct_slice(*, seed: str, index: int, size: int) -> Dataset:
    """Slice ``index`` of the series ``seed``: ``size`` x ``size`` 16-bit pixels
    (512 gives a ~512 KB instance, like a real CT slice)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = _uid(seed, "sop", index)
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.SeriesInstanceUID = _uid(seed, "series")
    ds.PatientName, ds.PatientID = "测试^患者", "BENCH-0001"
    ds.Modality, ds.StudyDate, ds.StudyTime = "CT", "20240501", "083000"
    ds.InstanceNumber = index + 1
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng([sum(seed.encode()), index])
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_ct_series(folder: Path, *, count: int = 300, size: int = 512,
                    seed: str = "relay-bench-ct") -> list[Path]:
    """Write ``count`` slices to ``folder`` (created) as ``CT_0001.dcm`` ...; returns paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"CT_{index + 1:04d}.dcm"
        ct_slice(seed=seed, index=index, size=size).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths

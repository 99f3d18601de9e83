"""Write the committed sample DICOM files, their manifest and their README.

Usage: ``python sample_dicom/generate.py [--out DIR]`` (default: this script's folder).

The files are test inputs for the relay: five studies of the kinds a township
health centre sends (DR chest, CT head, colour Doppler cine, 12-lead ECG, and one
compressed MR slice), with Chinese patient names in GB18030 and UTF-8 so that
tests can check that names arrive at the county exactly as the modality wrote them.

Output is deterministic: UIDs are name-based UUIDs under ``2.25``, dates are fixed,
random content comes from seeded legacy ``RandomState`` streams, and the file meta
names this generator rather than the installed pydicom. Running it twice writes
byte-identical files; ``tests/dicom/test_samples.py`` checks that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

import synth

HERE = Path(__file__).resolve().parent

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:county-relay:sample_dicom:v1")

IMPLEMENTATION_VERSION_NAME = "RELAY_SAMPLES_1"
"""Written instead of pydicom's own name so that output does not follow pydicom's version."""

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
ECG_12_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"

SOP_CLASS_NAMES = {
    DX_FOR_PRESENTATION: "Digital X-Ray Image Storage - For Presentation",
    CT_IMAGE: "CT Image Storage",
    MR_IMAGE: "MR Image Storage",
    US_MULTIFRAME: "Ultrasound Multi-frame Image Storage",
    ECG_12_LEAD: "12-lead ECG Waveform Storage",
}


def make_uid(*parts: str) -> str:
    """A stable ``2.25`` UID named by ``parts``.

    pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores the entropy
    and returns a random UUID, so the name-based UUID is built here instead.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(parts)).int}"


IMPLEMENTATION_CLASS_UID = make_uid("implementation")


@dataclass(frozen=True, slots=True)
class Study:
    """Who and where: the patient, study and site attributes of one sample study."""

    key: str
    charset: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    accession: str
    date: str
    time: str
    description: str
    institution: str
    department: str
    referring: str
    station: str
    source_ae: str
    manufacturer_model: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One file to write, with what the README and manifest say about it."""

    path: str
    dataset: Dataset
    what: str
    pixel_shape: tuple[int, ...] | None = None
    waveform_shape: tuple[int, ...] | None = None


def code(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    """A Code Sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if version is not None:
        item.CodingSchemeVersion = version
    item.CodeMeaning = meaning
    return item


def base_dataset(
    study: Study, *, sop_class: str, modality: str, series: int, series_description: str,
    instance: int, transfer_syntax: str, body_part: str | None,
) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes shared by every file."""
    sop_uid = make_uid(study.key, "instance", str(series), str(instance))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.FileMetaInformationVersion = b"\x00\x01"
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta.SourceApplicationEntityTitle = study.source_ae
    if study.charset:
        ds.SpecificCharacterSet = study.charset
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring
    ds.TimezoneOffsetFromUTC = "+0800"
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series_description
    ds.InstitutionalDepartmentName = study.department
    ds.ManufacturerModelName = study.manufacturer_model
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = study.source_ae.split("_")[0]
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.age
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.DeviceSerialNumber = f"SN-{study.station}"
    ds.SoftwareVersions = "1.0"
    ds.StudyInstanceUID = make_uid(study.key, "study")
    ds.SeriesInstanceUID = make_uid(study.key, "series", str(series))
    ds.StudyID = study.accession[-4:]
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray[Any, Any], *, photometric: str, bits_stored: int) -> None:
    """Image Pixel module attributes and uncompressed Pixel Data for ``pixels``."""
    colour = photometric == "RGB"
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    vr = "OW" if ds.BitsAllocated > 8 else "OB"
    ds.add_new(Tag(0x7FE0, 0x0010), vr, pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())


# --- the five studies --------------------------------------------------------------

DX_STUDY = Study(
    key="cr_chest", charset="GB18030", patient_name="王^小明", patient_id="QS00012345",
    birth_date="19680415", sex="M", age="055Y", accession="QS2403120017", date="20240312",
    time="093015", description="胸部正位", institution="青山镇卫生院", department="放射科",
    referring="刘^芳", station="QSDR01", source_ae="QS_DR01", manufacturer_model="DR-500",
)
CT_STUDY = Study(
    key="ct_head", charset="ISO_IR 192", patient_name="Li^Na=李^娜", patient_id="HK00056789",
    birth_date="19790822", sex="F", age="044Y", accession="HK2403120042", date="20240312",
    time="140512", description="头颅平扫", institution="河口镇中心卫生院", department="放射科",
    referring="Zhou^Min=周^敏", station="HKCT01", source_ae="HK_CT01", manufacturer_model="CT-16",
)
US_STUDY = Study(
    key="us_multiframe", charset="", patient_name="ZHAO^LEI", patient_id="SQ00002468",
    birth_date="19900103", sex="M", age="034Y", accession="SQ2403130008", date="20240313",
    time="102044", description="ABDOMEN COLOR DOPPLER", institution="Shuangqiao Township Health Center",
    department="Ultrasound", referring="HE^JUN", station="SQUS01", source_ae="SQ_US01",
    manufacturer_model="US-80",
)
ECG_STUDY = Study(
    key="ecg_12lead", charset="GB18030", patient_name="陈^思喆", patient_id="BS00013579",
    birth_date="19520907", sex="M", age="071Y", accession="BS2403130003", date="20240313",
    time="084530", description="常规心电图", institution="白石乡卫生院", department="心电图室",
    referring="吴^强", station="BSECG01", source_ae="BS_ECG01", manufacturer_model="ECG-1200",
)
MR_STUDY = Study(
    key="compressed", charset="ISO_IR 192", patient_name="孙^丽华", patient_id="HK00061234",
    birth_date="19850611", sex="F", age="038Y", accession="HK2403140011", date="20240314",
    time="161005", description="头颅MR平扫", institution="河口镇中心卫生院", department="放射科",
    referring="郑^洁", station="HKMR01", source_ae="HK_MR01", manufacturer_model="MR-035",
)


def window(pixels: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> tuple[str, str]:
    """Window centre and width (DS strings) spanning the 2nd-98th percentile of ``mask``."""
    low, high = np.percentile(pixels[mask], [2.0, 98.0])
    return str(int(round((low + high) / 2.0))), str(int(round(high - low)))


def build_dx() -> list[Sample]:
    """A PA chest from a DR room: DX For Presentation, MONOCHROME1, 12 of 16 bits."""
    pixels = synth.chest_radiograph(512, 512, seed=1001)
    ds = base_dataset(
        DX_STUDY, sop_class=DX_FOR_PRESENTATION, modality="DX", series=1,
        series_description="胸部 PA", instance=1, transfer_syntax=ExplicitVRLittleEndian,
        body_part="CHEST",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionDate, ds.AcquisitionTime = DX_STUDY.date, DX_STUDY.time
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ProtocolName = "Chest PA"
    ds.KVP = "120"
    ds.DistanceSourceToDetector = "1800"
    ds.DistanceSourceToPatient = "1650"
    ds.ExposureTime = 8
    ds.XRayTubeCurrent = 250
    ds.Exposure = 2
    ds.ImagerPixelSpacing = ["0.84", "0.84"]
    ds.DetectorType = "SCINTILLATOR"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "INVERSE"
    ds.WindowCenter, ds.WindowWidth = window(pixels, pixels < 3000)
    ds.WindowCenterWidthExplanation = "NORMAL"
    set_pixels(ds, pixels, photometric="MONOCHROME1", bits_stored=12)
    return [Sample("cr_chest/DX_chest_PA.dcm", ds, "PA chest radiograph (DR)", pixel_shape=pixels.shape)]


def _ct_slice(index: int) -> Sample:
    """Slice ``index`` (1-based) of the head series, 5 mm apart from the skull base up."""
    size, spacing = 128, 1.796875
    pixels = synth.ct_head_slice(size, index - 1, seed=2001)
    z = -40.0 + 5.0 * (index - 1)
    ds = base_dataset(
        CT_STUDY, sop_class=CT_IMAGE, modality="CT", series=2, series_description="Head 5mm",
        instance=index, transfer_syntax=ImplicitVRLittleEndian, body_part="HEAD",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionDate, ds.AcquisitionTime = CT_STUDY.date, CT_STUDY.time
    ds.ContentTime = f"{CT_STUDY.time[:4]}{int(CT_STUDY.time[4:]) + index:02d}"
    ds.ScanOptions = "AXIAL MODE"
    ds.SliceThickness = "5"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "250"
    ds.ReconstructionDiameter = "230"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "140"
    ds.ExposureTime = 1000
    ds.XRayTubeCurrent = 220
    ds.Exposure = 220
    ds.ConvolutionKernel = "H30s"
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    first = -115.0 + spacing / 2.0
    ds.ImagePositionPatient = [repr(first), repr(first), repr(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = make_uid(CT_STUDY.key, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = repr(z)
    ds.PixelSpacing = [repr(spacing), repr(spacing)]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "80"
    ds.WindowCenterWidthExplanation = "BRAIN"
    set_pixels(ds, pixels, photometric="MONOCHROME2", bits_stored=16)
    what = f"axial head CT slice {index} of 5"
    return Sample(f"ct_head/CT_head_{index:03d}.dcm", ds, what, pixel_shape=pixels.shape)


def build_ct() -> list[Sample]:
    """Five 128x128 axial head slices, signed 16 bits, Implicit VR Little Endian."""
    return [_ct_slice(i) for i in range(1, 6)]


def _us_region(*, data_type: int, box: tuple[int, int, int, int]) -> Dataset:
    """One Sequence of Ultrasound Regions item: 1 mm pixels, depth down from the probe."""
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = box[0], box[1]
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box[2], box[3]
    item.PhysicalUnitsXDirection = 3
    item.PhysicalUnitsYDirection = 3
    item.ReferencePixelX0 = 80
    item.ReferencePixelY0 = 0
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    item.PhysicalDeltaX = 0.1
    item.PhysicalDeltaY = 0.1
    return item


def build_us() -> list[Sample]:
    """A colour Doppler cine of 8 RGB frames, 160x120, no Specific Character Set."""
    pixels = synth.doppler_cine(8, 120, 160, seed=3001)
    ds = base_dataset(
        US_STUDY, sop_class=US_MULTIFRAME, modality="US", series=1,
        series_description="LIVER CDFI", instance=1, transfer_syntax=ExplicitVRLittleEndian,
        body_part="ABDOMEN",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0011"]
    ds.AcquisitionDateTime = US_STUDY.date + US_STUDY.time
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.FrameTime = "33.3"
    ds.CineRate = 30
    ds.RecommendedDisplayFrameRate = 30
    ds.FrameIncrementPointer = Tag(0x0018, 0x1063)
    ds.TransducerType = "CURVED LINEAR"
    ds.SequenceOfUltrasoundRegions = Sequence([
        _us_region(data_type=1, box=(0, 0, 159, 119)),
        _us_region(data_type=2, box=(50, 52, 112, 80)),
    ])
    set_pixels(ds, pixels, photometric="RGB", bits_stored=8)
    what = "colour Doppler cine, 8 RGB frames"
    return [Sample("us_multiframe/US_liver_cine.dcm", ds, what, pixel_shape=pixels.shape)]


# SCP-ECG lead codes (CID 3001 before it moved to MDC), in the order of synth.ECG_LEADS.
SCPECG_LEADS: dict[str, tuple[str, str]] = {
    "I": ("5.6.3-9-1", "Lead I (Einthoven)"),
    "II": ("5.6.3-9-2", "Lead II"),
    "III": ("5.6.3-9-61", "Lead III"),
    "aVR": ("5.6.3-9-62", "Lead aVR"),
    "aVL": ("5.6.3-9-63", "Lead aVL"),
    "aVF": ("5.6.3-9-64", "Lead aVF"),
    "V1": ("5.6.3-9-3", "Lead V1"),
    "V2": ("5.6.3-9-4", "Lead V2"),
    "V3": ("5.6.3-9-5", "Lead V3"),
    "V4": ("5.6.3-9-6", "Lead V4"),
    "V5": ("5.6.3-9-7", "Lead V5"),
    "V6": ("5.6.3-9-8", "Lead V6"),
}

ECG_SAMPLING_HZ = 500
ECG_SECONDS = 10
ECG_HEART_RATE = 72
ECG_UV_PER_COUNT = 5.0

# Global measurements a cart reports: (MDC code, meaning, value, UCUM unit, unit meaning).
ECG_MEASUREMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("2:16770", "ECG Heart Rate", str(ECG_HEART_RATE), "/min", "per minute"),
    ("2:15872", "PR interval global", "164", "ms", "millisecond"),
    ("2:16156", "QRS duration global", "92", "ms", "millisecond"),
    ("2:16160", "QT interval global", "388", "ms", "millisecond"),
)


def _ecg_channel(label: str) -> Dataset:
    """Channel Definition Sequence item for one lead: 5 uV per count, 0.05-150 Hz, 50 Hz notch."""
    value, meaning = SCPECG_LEADS[label]
    item = Dataset()
    item.ChannelLabel = label
    item.ChannelStatus = "OK"
    item.ChannelSourceSequence = Sequence([code(value, "SCPECG", meaning, "1.3")])
    item.ChannelSensitivity = "5"
    item.ChannelSensitivityUnitsSequence = Sequence([code("uV", "UCUM", "microvolt", "1.4")])
    item.ChannelSensitivityCorrectionFactor = "1"
    item.ChannelBaseline = "0"
    item.ChannelSampleSkew = "0"
    item.WaveformBitsStored = 16
    item.FilterLowFrequency = "0.05"
    item.FilterHighFrequency = "150"
    item.NotchFilterFrequency = "50"
    return item


def _ecg_annotations() -> Sequence:
    """The cart's interpretation (in Chinese, so GB18030 reaches a non-name text too) and measurements."""
    statement = Dataset()
    statement.UnformattedTextValue = "窦性心律"
    statement.ReferencedWaveformChannels = [1, 0]
    items = [statement]
    for value, meaning, number, unit, unit_meaning in ECG_MEASUREMENTS:
        item = Dataset()
        item.ReferencedWaveformChannels = [1, 0]
        item.ConceptNameCodeSequence = Sequence([code(value, "MDC", meaning)])
        item.NumericValue = number
        item.MeasurementUnitsCodeSequence = Sequence([code(unit, "UCUM", unit_meaning, "1.4")])
        items.append(item)
    return Sequence(items)


def build_ecg() -> list[Sample]:
    """A resting 12-lead ECG: one multiplex group, 12 x 5000 samples at 500 Hz, 16-bit SS."""
    samples = synth.twelve_lead_ecg(
        sampling_hz=ECG_SAMPLING_HZ, seconds=ECG_SECONDS, heart_rate_bpm=ECG_HEART_RATE,
        uv_per_count=ECG_UV_PER_COUNT, seed=4001,
    )
    ds = base_dataset(
        ECG_STUDY, sop_class=ECG_12_LEAD, modality="ECG", series=1,
        series_description="12导联静息心电图", instance=1, transfer_syntax=ExplicitVRLittleEndian,
        body_part=None,
    )
    ds.AcquisitionDateTime = ECG_STUDY.date + ECG_STUDY.time
    ds.AcquisitionContextSequence = Sequence([])
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = samples.shape[1]
    group.NumberOfWaveformSamples = samples.shape[0]
    group.SamplingFrequency = str(ECG_SAMPLING_HZ)
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = Sequence([_ecg_channel(label) for label in synth.ECG_LEADS])
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.add_new(Tag(0x5400, 0x1010), "OW", samples.astype("<i2").tobytes())
    ds.WaveformSequence = Sequence([group])
    ds.WaveformAnnotationSequence = _ecg_annotations()
    what = "resting 12-lead ECG, 10 s at 500 Hz"
    return [Sample("ecg_12lead/ECG_12lead_rest.dcm", ds, what, waveform_shape=samples.shape)]


def build_mr_rle() -> list[Sample]:
    """One 256x256 T2 axial MR slice, RLE Lossless (pydicom's own encoder)."""
    pixels = synth.mr_brain_t2(256, seed=5001)
    ds = base_dataset(
        MR_STUDY, sop_class=MR_IMAGE, modality="MR", series=3, series_description="T2 TSE AX",
        instance=1, transfer_syntax=ExplicitVRLittleEndian, body_part="HEAD",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.AcquisitionDate, ds.AcquisitionTime = MR_STUDY.date, MR_STUDY.time
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "tse2d1_12"
    ds.SliceThickness = "6"
    ds.RepetitionTime = "4000"
    ds.EchoTime = "100"
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = "14.9"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = "0.35"
    ds.SpacingBetweenSlices = "7"
    ds.EchoTrainLength = 12
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = ["-114.55078125", "-114.55078125", "-10"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = make_uid(MR_STUDY.key, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = "-10"
    ds.PixelSpacing = ["0.8984375", "0.8984375"]
    ds.WindowCenter, ds.WindowWidth = window(pixels, pixels > 200)
    set_pixels(ds, pixels, photometric="MONOCHROME2", bits_stored=12)
    # compress() would otherwise give the instance a new random SOP Instance UID.
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    what = "axial T2 MR slice, RLE Lossless"
    return [Sample("compressed/MR_head_T2_RLE.dcm", ds, what, pixel_shape=pixels.shape)]


def build_all() -> list[Sample]:
    """Every sample, in the order the README lists them."""
    return build_dx() + build_ct() + build_us() + build_ecg() + build_mr_rle()


# --- writing -------------------------------------------------------------------------


def manifest_entry(sample: Sample, path: Path) -> dict[str, Any]:
    """What tests need to know about one written file, read back from the file itself."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    intended = str(sample.dataset.PatientName)
    if str(ds.PatientName) != intended:
        raise RuntimeError(f"{sample.path}: PatientName reads back as {str(ds.PatientName)!r}")
    charset = ds.get("SpecificCharacterSet", "")
    return {
        "path": sample.path,
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "modality": str(ds.Modality),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "specific_character_set": charset if isinstance(charset, str) else "\\".join(charset),
        "patient_name": str(ds.PatientName),
        "patient_id": str(ds.PatientID),
        "accession_number": str(ds.AccessionNumber),
        "institution_name": str(ds.InstitutionName),
        "study_description": str(ds.StudyDescription),
        "study_date": str(ds.StudyDate),
        "series_number": int(ds.SeriesNumber),
        "instance_number": int(ds.InstanceNumber),
        "pixel_shape": list(sample.pixel_shape) if sample.pixel_shape else None,
        "waveform_shape": list(sample.waveform_shape) if sample.waveform_shape else None,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def render_readme(samples: list[Sample], entries: list[dict[str, Any]]) -> str:
    """The README: one row per file, with the exact patient names tests compare against."""
    lines = [
        "# Sample DICOM files",
        "",
        "Generated by `generate.py` (do not edit by hand: change the generator and run",
        "`python sample_dicom/generate.py`). The content is synthetic; the patients do not exist.",
        "Output is byte-for-byte deterministic; `tests/dicom/test_samples.py` regenerates it",
        "into a temporary folder and compares. `manifest.json` holds the same facts as this table,",
        "machine-readable, plus UIDs, sizes and SHA-256 digests.",
        "",
        "| file | what | SOP class | transfer syntax | charset | patient name (exact) | patient ID |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for sample, entry in zip(samples, entries):
        sop = entry["sop_class_uid"]
        ts = entry["transfer_syntax_uid"]
        lines.append(
            f"| `{entry['path']}` | {sample.what} | {SOP_CLASS_NAMES[sop]} (`{sop}`) "
            f"| {pydicom.uid.UID(ts).name} (`{ts}`) | {entry['specific_character_set'] or '(none: ASCII)'} "
            f"| `{entry['patient_name']}` | `{entry['patient_id']}` |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "- `王^小明` and `陈^思喆` are GB18030-encoded; `喆` (0x86B4) is outside GB2312, so a",
        "  reader that decodes GB18030 as GB2312 loses it.",
        "- `Li^Na=李^娜` has an alphabetic and an ideographic component group (UTF-8).",
        "- The ECG also carries a GB18030 interpretation statement (`窦性心律`) in its",
        "  Waveform Annotation Sequence; its leads use SCP-ECG codes (`SCPECG` 1.3), as many",
        "  installed carts still send, and limb leads obey III = II - I exactly.",
        "- DX is MONOCHROME1 (Presentation LUT Shape INVERSE), 12 bits stored in 16.",
        "- The bytes may depend on the pydicom and numpy versions that wrote them (pydicom 3.0).",
        "  If an upgrade changes them, the regeneration test fails: regenerate, check the",
        "  diff of `manifest.json`, and commit.",
        "",
    ]
    return "\n".join(lines)


def write_samples(out_dir: Path) -> list[dict[str, Any]]:
    """Write every sample, ``manifest.json`` and ``README.md`` under ``out_dir``."""
    samples = build_all()
    entries = []
    for sample in samples:
        path = out_dir / sample.path
        path.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, sample.dataset, enforce_file_format=True)
        entries.append(manifest_entry(sample, path))
    manifest = {"generator": "sample_dicom/generate.py", "files": entries}
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8")
    (out_dir / "README.md").write_text(render_readme(samples, entries), encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    entries = write_samples(args.out)
    total = sum(e["size_bytes"] for e in entries)
    print(f"wrote {len(entries)} files, {total} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

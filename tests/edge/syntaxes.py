"""Test files in every transfer syntax a township sender may use, made from the
committed samples (tests/conftest.py SAMPLES) by independent encoders: DCMTK's dcmconv,
dcmcjpeg, dcmcjpls and dcmcrle, and pydicom with pylibjpeg-openjpeg for JPEG 2000.
Each file gets SOP Instance UIDs of its own, so one spool can hold them all.

The video syntaxes (MPEG-2, H.264, HEVC) carry a synthetic bitstream in one fragment:
the edge neither decodes nor changes pixel data, so these files test the transport of
an encapsulated video object, not a decoder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    JPEG2000,
    MPEG2MPHL,
    MPEG2MPML,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP422D,
    MPEG4HP423D,
    MPEG4HP42STEREO,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HEVCM10P51,
    HEVCMP51,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"
CT = SAMPLES / "ct_head" / "CT_head_001.dcm"
"""128x128, 16 bits signed, Implicit VR LE."""
DX = SAMPLES / "cr_chest" / "DX_chest_PA.dcm"
"""512x512, 12 bits unsigned (JPEG extended and JPEG-LS near-lossless need unsigned)."""
US = SAMPLES / "us_multiframe" / "US_liver_cine.dcm"
"""8 frames of 120x160 RGB, 8 bits (JPEG baseline)."""
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
VIDEO_SYNTAXES = (MPEG2MPML, MPEG2MPHL, MPEG4HP41, MPEG4HP41BD, MPEG4HP422D, MPEG4HP423D,
                  MPEG4HP42STEREO, HEVCMP51, HEVCM10P51)

# transfer syntax -> (source sample, DCMTK command that converts it, or None for pydicom)
_DCMTK: dict[str, tuple[Path, list[str]]] = {
    ImplicitVRLittleEndian: (CT, ["dcmconv", "+ti"]),
    ExplicitVRLittleEndian: (CT, ["dcmconv", "+te"]),
    ExplicitVRBigEndian: (CT, ["dcmconv", "+tb"]),
    DeflatedExplicitVRLittleEndian: (CT, ["dcmconv", "+td"]),
    JPEGBaseline8Bit: (US, ["dcmcjpeg", "+eb"]),
    JPEGExtended12Bit: (DX, ["dcmcjpeg", "+ee"]),
    JPEGLossless: (CT, ["dcmcjpeg", "+el"]),
    JPEGLosslessSV1: (CT, ["dcmcjpeg", "+e1"]),
    JPEGLSLossless: (CT, ["dcmcjpls", "+el"]),
    JPEGLSNearLossless: (DX, ["dcmcjpls", "+en"]),
    RLELossless: (CT, ["dcmcrle"]),
}
_PYDICOM: dict[str, tuple[Path, dict[str, object]]] = {
    JPEG2000Lossless: (CT, {}),
    JPEG2000: (DX, {"j2k_cr": [10]}),
}
ALL_SYNTAXES = (*_DCMTK, *_PYDICOM, *VIDEO_SYNTAXES)


def _fresh(source: Path) -> Dataset:
    """``source`` with new study, series and instance UIDs (file meta to match)."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _video(syntax: str) -> Dataset:
    ds = _fresh(US)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(VIDEO_PHOTOGRAPHIC)
    ds.Modality = "XC"
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer = 8, 40.0, 0x00181063
    ds.PlanarConfiguration = 0
    bitstream = bytes(range(256)) * 40  # synthetic: the edge never decodes it
    ds.PixelData = encapsulate([bitstream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


def make_file(syntax: str, folder: Path, name: str | None = None) -> Path:
    """One file in ``syntax`` (a UID of ALL_SYNTAXES) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{syntax}.dcm")
    if syntax in _DCMTK:
        source, command = _DCMTK[syntax]
        plain = folder / f".{path.stem}.source.dcm"
        _fresh(source).save_as(plain, enforce_file_format=True)
        done = subprocess.run([*command, str(plain), str(path)], capture_output=True, text=True,
                              timeout=60, check=False)
        plain.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed for {syntax}: {done.stderr}")
    elif syntax in _PYDICOM:
        source, options = _PYDICOM[syntax]
        ds = _fresh(source)
        ds.compress(syntax, encoding_plugin="pylibjpeg", **options)  # type: ignore[arg-type]
        ds.save_as(path, enforce_file_format=True)
    else:
        _video(syntax).save_as(path, enforce_file_format=True)
    written = pydicom.dcmread(path, stop_before_pixels=True)
    if written.file_meta.TransferSyntaxUID != syntax:
        raise RuntimeError(f"{path.name} came out in {written.file_meta.TransferSyntaxUID}")
    return path


def sop_instance_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)

"""Image rendering against values computed by hand from PS3.3 C.11 (pure, no servers).

Expected bytes are written out as literals with the arithmetic beside them, so a
change in the pipeline that moves a single grey level fails here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from relay.county.render.errors import RenderError, RenderFailure
from relay.county.render.image import (
    MAX_TOTAL_SAMPLES,
    number_of_frames,
    render_frame,
    render_jpeg,
    render_png,
    thumbnail,
    window_presets,
)

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def build(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    syntax: str = ExplicitVRLittleEndian,
    sop_class: str = SECONDARY_CAPTURE,
    **attributes: Any,
) -> Dataset:
    """A minimal Part 10 dataset holding ``pixels`` (frames first when 3-D grey / 4-D colour)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "OT"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def grey(data: bytes, **kwargs: Any) -> np.ndarray:
    image = render_frame(data, **kwargs)
    assert image.mode == "L"
    return np.asarray(image)


# HU of the 4x4 CT below, and the 8-bit value of each under window 40/80 (LINEAR):
# x <= c - 0.5 - (w-1)/2 = 0 -> 0;  x > c - 0.5 + (w-1)/2 = 79 -> 255;
# else y = ((x - 39.5) / 79 + 0.5) * 255, rounded half up.
CT_HU = [-1024, -1000, -24, -1, 0, 1, 20, 39, 40, 41, 60, 78, 79, 80, 176, 976]
CT_BRAIN = [
    0, 0, 0, 0,
    0,  # 0 <= 0
    3,  # ((1 - 39.5)/79 + .5) * 255 = 3.23
    65,  # ((20 - 39.5)/79 + .5) * 255 = 64.56
    126,  # ((39 - 39.5)/79 + .5) * 255 = 125.89
    129,  # ((40 - 39.5)/79 + .5) * 255 = 129.11
    132,  # ((41 - 39.5)/79 + .5) * 255 = 132.34
    194,  # ((60 - 39.5)/79 + .5) * 255 = 193.67
    252,  # ((78 - 39.5)/79 + .5) * 255 = 251.77
    255,  # ((79 - 39.5)/79 + .5) * 255 = 255.0 (79 is not > 79)
    255, 255, 255,
]


def ct_4x4(**attributes: Any) -> bytes:
    stored = (np.array(CT_HU, dtype=np.int16) + 1024).reshape(4, 4)
    ds = build(
        stored, sop_class=CT_IMAGE, RescaleSlope="1", RescaleIntercept="-1024",
        WindowCenter="40", WindowWidth="80", **attributes,
    )
    ds.Modality = "CT"
    return to_bytes(ds)


def test_ct_window_40_80_matches_the_ps3_3_linear_formula() -> None:
    assert grey(ct_4x4()).ravel().tolist() == CT_BRAIN


def test_caller_window_overrides_the_file_window() -> None:
    # window 0/100: y = ((x + 0.5)/99 + 0.5) * 255 between -50 and 49
    out = grey(ct_4x4(), window=(0.0, 100.0)).ravel()
    hu = {v: i for i, v in enumerate(CT_HU)}
    assert out[hu[-1000]] == 0
    assert out[hu[-24]] == 67  # ((-23.5)/99 + .5) * 255 = 66.97
    assert out[hu[0]] == 129  # (0.5/99 + .5) * 255 = 128.79
    assert out[hu[20]] == 180  # (20.5/99 + .5) * 255 = 180.30
    assert out[hu[60]] == 255


def test_first_of_several_file_windows_is_used() -> None:
    data = ct_4x4()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.WindowCenter, ds.WindowWidth = ["40", "400"], ["80", "1500"]
    assert grey(to_bytes(ds)).ravel().tolist() == CT_BRAIN


def test_sample_ct_renders_as_the_formula_on_every_pixel() -> None:
    data = (SAMPLES / "ct_head/CT_head_003.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = ds.pixel_array.astype(np.float64) - 1024.0
    y = ((hu - 39.5) / 79.0 + 0.5) * 255.0
    expected = np.floor(np.where(hu <= 0, 0, np.where(hu > 79, 255, y)) + 0.5).astype(np.uint8)
    assert np.array_equal(grey(data), expected)


def mr_2x2(photometric: str = "MONOCHROME2", **attributes: Any) -> bytes:
    """Stored 0, 4, 8, 12 with slope 2.5 and intercept 10: values 10, 20, 30, 40."""
    stored = np.array([[0, 4], [8, 12]], dtype=np.uint16)
    return to_bytes(build(stored, photometric=photometric, RescaleSlope="2.5", RescaleIntercept="10", **attributes))


def test_rescale_slope_other_than_one_is_applied_before_the_window() -> None:
    # window 25/21: bounds 14.5 and 34.5; y = ((x - 24.5)/20 + .5) * 255
    out = grey(mr_2x2(WindowCenter="25", WindowWidth="21"))
    assert out.ravel().tolist() == [0, 70, 198, 255]  # 20 -> 70.125, 30 -> 197.625


def test_monochrome1_is_inverted_after_voi() -> None:
    out = grey(mr_2x2("MONOCHROME1", WindowCenter="25", WindowWidth="21"))
    assert out.ravel().tolist() == [255, 185, 57, 0]


def test_linear_exact_function() -> None:
    # y = ((x - 25)/20 + .5) * 255 between 15 and 35
    out = grey(mr_2x2(WindowCenter="25", WindowWidth="20", VOILUTFunction="LINEAR_EXACT"))
    assert out.ravel().tolist() == [0, 64, 191, 255]  # 63.75, 191.25


def test_sigmoid_function() -> None:
    # y = 255 / (1 + exp(-4 (x - 25) / 20))
    out = grey(mr_2x2(WindowCenter="25", WindowWidth="20", VOILUTFunction="SIGMOID"))
    assert out.ravel().tolist() == [12, 69, 186, 243]  # 12.09, 68.58, 186.42, 242.91


def test_voi_lut_sequence_when_no_window() -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 10])  # 4 entries, first mapped 0, 10 bits
    item.add_new(0x00283006, "US", [0, 341, 682, 1023])
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    out = grey(to_bytes(build(stored, VOILUTSequence=[item])))
    assert out.ravel().tolist() == [0, 85, 170, 255]  # entry / 1023 * 255


def test_voi_lut_clamps_below_first_mapped_and_above_last_entry() -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [3, 1, 8])
    item.add_new(0x00283006, "US", [10, 20, 30])
    stored = np.array([[0, 1], [2, 9]], dtype=np.uint16)
    assert grey(to_bytes(build(stored, VOILUTSequence=[item]))).ravel().tolist() == [10, 10, 20, 30]


def test_min_max_of_the_frame_when_the_file_has_no_voi() -> None:
    # LINEAR_EXACT over 0..200: y = ((x - 100)/200 + .5) * 255
    stored = np.array([[0, 50], [100, 200]], dtype=np.uint16)
    assert grey(to_bytes(build(stored))).ravel().tolist() == [0, 64, 128, 255]  # 63.75, 127.5


def test_modality_lut_sequence_replaces_rescale() -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 12])
    item.add_new(0x00283006, "US", [0, 1000, 2000, 4000])
    item.ModalityLUTType = "US"
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    data = to_bytes(build(stored, ModalityLUTSequence=[item], WindowCenter="2000.5", WindowWidth="4001"))
    # linear over 0..4000: y = (x / 4000) * 255 -> 0, 63.75, 127.5, 255
    assert grey(data).ravel().tolist() == [0, 64, 128, 255]


def test_palette_colour_applies_the_lookup_tables() -> None:
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    ds = build(stored, photometric="PALETTE COLOR")
    for tag, values in ((0x1201, [0, 65535, 0, 32896]), (0x1202, [0, 0, 65535, 32896]), (0x1203, [0, 0, 0, 65535])):
        ds.add_new(0x00280000 | (tag - 0x100), "US", [4, 0, 16])
        ds.add_new(0x00280000 | tag, "OW", np.array(values, dtype="<u2").tobytes())
    image = render_frame(to_bytes(ds))
    assert image.mode == "RGB"
    assert np.asarray(image).reshape(4, 3).tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0], [128, 128, 255]]


def quadrants() -> np.ndarray:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16, :16], rgb[:16, 16:] = (200, 30, 30), (30, 200, 30)
    rgb[16:, :16], rgb[16:, 16:] = (30, 30, 200), (220, 220, 40)
    return rgb


def test_native_ybr_full_is_converted_to_rgb() -> None:
    rgb = quadrants()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = build(ybr, photometric="YBR_FULL")
    out = np.asarray(render_frame(to_bytes(ds))).astype(int)
    assert np.abs(out - rgb.astype(int)).max() <= 2


def test_jpeg_ybr_is_converted_once_whoever_converts_it() -> None:
    buffer = io.BytesIO()
    Image.fromarray(quadrants()).save(buffer, format="JPEG", quality=95)
    ds = build(None, syntax=JPEGBaseline8Bit)
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    out = np.asarray(render_frame(to_bytes(ds))).astype(int)
    centres = [out[8, 8], out[8, 24], out[24, 8], out[24, 24]]
    expected = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    assert all(np.abs(c - np.array(e)).max() <= 6 for c, e in zip(centres, expected, strict=True))


def multiframe() -> bytes:
    frames = np.stack([np.full((2, 3), v, dtype=np.uint16) for v in (0, 100, 200)])
    frames[:, 0, 0] = 0
    frames[:, 1, 2] = 200  # each frame spans 0..200 so min/max VOI is the same
    return to_bytes(build(frames, NumberOfFrames=3))


def test_multiframe_renders_the_requested_frame() -> None:
    data = multiframe()
    assert number_of_frames(data) == 3
    assert grey(data, frame=1)[0, 1] == 128  # 100 in a 0..200 LINEAR_EXACT window: 127.5
    assert grey(data, frame=2)[0, 1] == 255


@pytest.mark.parametrize("frame", [3, -1])
def test_frame_out_of_range_is_a_bad_request(frame: int) -> None:
    with pytest.raises(RenderError) as caught:
        render_frame(multiframe(), frame=frame)
    assert caught.value.kind is RenderFailure.BAD_REQUEST


def test_sample_us_cine_frame_is_the_stored_rgb() -> None:
    data = (SAMPLES / "us_multiframe/US_liver_cine.dcm").read_bytes()
    image = render_frame(data, frame=4)
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), pydicom.dcmread(io.BytesIO(data)).pixel_array[4])


def test_sample_dx_monochrome1_is_inverted_file_window() -> None:
    data = (SAMPLES / "cr_chest/DX_chest_PA.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    assert np.array_equal(grey(data), 255 - np.floor(y + 0.5).astype(np.uint8))


def test_sample_rle_mr_decodes_like_its_native_copy() -> None:
    data = (SAMPLES / "compressed/MR_head_T2_RLE.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    ds.decompress()
    rendered = grey(data)
    assert rendered.shape == (256, 256) and rendered.std() > 10
    assert np.array_equal(rendered, grey(to_bytes(ds)))


def test_jpeg_2000_ct_renders_like_the_native_ct() -> None:
    data = (SAMPLES / "ct_head/CT_head_002.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(JPEG2000Lossless)
    assert np.array_equal(grey(to_bytes(ds)), grey(data))


def test_pixel_padding_is_left_out_of_the_min_max_window() -> None:
    stored = np.array([[-2000, 0], [50, 100]], dtype=np.int16)
    data = to_bytes(build(stored, PixelPaddingValue=-2000))
    assert grey(data).ravel().tolist() == [0, 0, 128, 255]  # window 0..100; padding below it


def test_png_jpeg_and_thumbnail_have_the_requested_sizes() -> None:
    data = (SAMPLES / "us_multiframe/US_liver_cine.dcm").read_bytes()  # 160 x 120
    assert Image.open(io.BytesIO(render_png(data, size=320))).size == (320, 240)
    assert Image.open(io.BytesIO(render_jpeg(data, quality=70))).format == "JPEG"
    thumb = Image.open(io.BytesIO(thumbnail(data, size=64)))
    assert thumb.format == "JPEG" and thumb.size == (64, 48)


def test_truncated_pixel_data_value_is_a_render_error() -> None:
    ds = pydicom.dcmread(SAMPLES / "ct_head/CT_head_001.dcm")
    ds.PixelData = ds.PixelData[:-200]
    with pytest.raises(RenderError) as caught:
        render_frame(to_bytes(ds))
    assert caught.value.kind is RenderFailure.TRUNCATED


@pytest.mark.parametrize("keep", [100, 400, 20000])
def test_a_file_cut_short_is_a_render_error(keep: int) -> None:
    data = (SAMPLES / "cr_chest/DX_chest_PA.dcm").read_bytes()[:keep]
    with pytest.raises(RenderError):
        render_frame(data)


def test_corrupt_rle_fragment_is_a_render_error() -> None:
    ds = pydicom.dcmread(SAMPLES / "compressed/MR_head_T2_RLE.dcm")
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x40" * 60 + b"\xff" * 200])
    with pytest.raises(RenderError):
        render_frame(to_bytes(ds))


def test_absurd_size_is_refused_before_decoding() -> None:
    ds = build(np.zeros((2, 2), np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 5000
    assert 60000 * 60000 * 5000 > MAX_TOTAL_SAMPLES
    with pytest.raises(RenderError) as caught:
        render_frame(to_bytes(ds))
    assert caught.value.kind is RenderFailure.TOO_LARGE


def test_transfer_syntax_without_a_decoder_is_unsupported() -> None:
    ds = build(None, syntax=MPEG4HP41)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 16, 16, 3, "YBR_PARTIAL_420"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    with pytest.raises(RenderError) as caught:
        render_frame(to_bytes(ds))
    assert caught.value.kind is RenderFailure.UNSUPPORTED


def test_unknown_transfer_syntax_is_unsupported() -> None:
    data = (SAMPLES / "cr_chest/DX_chest_PA.dcm").read_bytes()
    at = data.index(b"1.2.840.10008.1.2.1\x00")
    patched = data[:at] + b"1.2.840.99999.1.2.1\x00" + data[at + 20:]
    with pytest.raises(RenderError) as caught:
        render_frame(patched)
    assert caught.value.kind is RenderFailure.UNSUPPORTED


def test_an_instance_without_pixel_data_is_reported_as_such() -> None:
    with pytest.raises(RenderError) as caught:
        render_frame((SAMPLES / "ecg_12lead/ECG_12lead_rest.dcm").read_bytes())
    assert caught.value.kind is RenderFailure.NO_PIXEL_DATA


def test_bytes_that_are_not_dicom_are_reported_as_such() -> None:
    with pytest.raises(RenderError) as caught:
        render_png(b"GIF89a" + b"\x00" * 400)
    assert caught.value.kind is RenderFailure.NOT_DICOM


def test_invalid_caller_window_is_a_bad_request() -> None:
    with pytest.raises(RenderError) as caught:
        render_frame(ct_4x4(), window=(40.0, 0.5))
    assert caught.value.kind is RenderFailure.BAD_REQUEST


def test_ct_presets_have_chinese_and_english_labels() -> None:
    presets = {p.key: p for p in window_presets("CT")}
    assert [(p.label_zh, p.center, p.width) for p in presets.values()] == [
        ("脑窗", 40, 80), ("肺窗", -600, 1500), ("纵隔窗", 40, 400), ("骨窗", 400, 1800), ("腹部", 40, 350),
    ]
    assert presets["lung"].label("en") == "Lung" and presets["lung"].label() == "肺窗"
    assert window_presets("MR") == ()

"""ECG decoding, measurement and paper (pure, no servers)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from relay.county.render import ecg_paper
from relay.county.render.ecg import (
    STANDARD_LEADS,
    decode_ecg,
    ecg_measurements,
    lead_name,
    paper_header,
    render_ecg_png,
)
from relay.county.render.errors import RenderError, RenderFailure

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom/ecg_12lead/ECG_12lead_rest.dcm"
TWELVE_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
RATE = 500
MDC = {
    "I": 1, "II": 2, "III": 61, "aVR": 62, "aVL": 63, "aVF": 64,
    "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
}  # lead numbers of the MDC codes 2:n


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def channel(
    lead: str, *, label: str | None = None, sensitivity: str = "5", units: str = "uV",
    correction: str = "1", baseline: str = "0", coded: bool = True,
) -> Dataset:
    item = Dataset()
    item.ChannelLabel = lead if label is None else label
    if coded:
        item.ChannelSourceSequence = Sequence([code(f"2:{MDC[lead]}", "MDC", f"Lead {lead}")])
    item.ChannelSensitivity = sensitivity
    item.ChannelSensitivityUnitsSequence = Sequence([code(units, "UCUM", units)])
    item.ChannelSensitivityCorrectionFactor = correction
    item.ChannelBaseline = baseline
    item.WaveformBitsStored = 16
    return item


def ecg_bytes(counts: np.ndarray, channels: list[Dataset]) -> bytes:
    """A 12-lead ECG instance holding ``counts`` (samples x channels, int16)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = TWELVE_LEAD, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "ECG"
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = counts.shape[1], counts.shape[0]
    group.SamplingFrequency = str(RATE)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    group.WaveformData = counts.astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def synthetic_lead_ii(
    bpm: float, seconds: float = 10.0, seed: int = 7, *, r_mv: float = 1.3, t_mv: float = 0.35
) -> np.ndarray:
    """P, QRS and T waves in mV at ``bpm``, with noise and baseline wander."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    rr = 60.0 / bpm
    signal = 0.1 * np.sin(2 * np.pi * 0.3 * t) + rng.normal(0, 0.02, t.size)
    waves = (  # (offset from R in s, width in s, height in mV): P, Q, R, S, T
        (-0.16, 0.025, 0.15), (-0.02, 0.008, -0.1), (0.0, 0.01, r_mv), (0.025, 0.008, -0.25),
        (0.3 * rr**0.5, 0.045, t_mv),
    )
    for beat in np.arange(0.4, seconds, rr):
        for offset, width, height in waves:
            signal += height * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
    return signal


def two_lead_ecg(bpm: float, **waves: float) -> bytes:
    ii = synthetic_lead_ii(bpm, **waves)
    counts = np.rint(np.stack([ii * 0.6, ii], axis=1) * 1000 / 5).astype(np.int16)
    return ecg_bytes(counts, [channel("I"), channel("II")])


def test_sample_heart_rate_from_the_signal_is_72() -> None:
    measured = ecg_measurements(SAMPLE.read_bytes())
    assert measured.lead == "II"
    assert measured.heart_rate_bpm == pytest.approx(72, abs=2)
    assert measured.rr_ms == pytest.approx(833, abs=15)


def test_sample_device_numbers_are_returned_separately() -> None:
    device = ecg_measurements(SAMPLE.read_bytes()).device
    assert (device.heart_rate_bpm, device.pr_ms, device.qrs_ms, device.qt_ms) == (72, 164, 92, 388)
    assert device.qtc_ms is None
    assert device.statements == ("窦性心律",)
    assert len(device.values) == 4


@pytest.mark.parametrize("bpm", [60, 120])
def test_synthetic_heart_rate_is_found(bpm: int) -> None:
    measured = ecg_measurements(two_lead_ecg(bpm))
    assert measured.heart_rate_bpm == pytest.approx(bpm, abs=1.5)
    assert measured.rr_ms == pytest.approx(60000 / bpm, abs=10)
    assert len(measured.r_peaks) == len(np.arange(0.4, 10.0, 60 / bpm))


def test_t_waves_taller_than_the_qrs_are_not_counted_as_beats() -> None:
    measured = ecg_measurements(two_lead_ecg(60, r_mv=0.6, t_mv=1.0))
    assert measured.heart_rate_bpm == pytest.approx(60, abs=1.5)


def test_sample_leads_are_identified_by_scpecg_codes_in_millivolts() -> None:
    ds = pydicom.dcmread(SAMPLE)
    raw = ds.waveform_array(0)  # already sensitivity-scaled: microvolts
    ecg = decode_ecg(SAMPLE.read_bytes())
    assert set(ecg.leads) == set(STANDARD_LEADS) and not ecg.derived
    assert ecg.sampling_hz == 500 and ecg.seconds == 10
    assert np.allclose(ecg.leads["V3"], raw[:, 8] / 1000.0)
    assert np.allclose(ecg.leads["III"], ecg.leads["II"] - ecg.leads["I"])


def test_millivolts_honour_sensitivity_correction_baseline_and_units() -> None:
    counts = np.array([[1000, 200, 7]] * RATE, dtype=np.int16)
    channels = [
        channel("I", sensitivity="2.5", correction="0.8", baseline="10"),  # (1000 * 2.5 * 0.8 + 10) uV
        channel("II", sensitivity="0.005", units="mV"),  # 200 * 0.005 mV
        channel("V1", sensitivity="0.001", units="V"),  # 7 * 0.001 V
    ]
    leads = decode_ecg(ecg_bytes(counts, channels)).leads
    assert leads["I"][0] == pytest.approx(2.01)
    assert leads["II"][0] == pytest.approx(1.0)
    assert leads["V1"][0] == pytest.approx(7.0)


def test_leads_are_mapped_by_code_when_channels_are_shuffled() -> None:
    order = ["V6", "aVF", "II", "V1", "I", "III", "V3", "aVR", "V2", "aVL", "V5", "V4"]
    counts = np.tile(np.arange(1, 13, dtype=np.int16) * 100, (RATE, 1))
    channels = [channel(lead, label=f"CH{i}") for i, lead in enumerate(order)]  # labels useless
    leads = decode_ecg(ecg_bytes(counts, channels)).leads
    for i, lead in enumerate(order):
        assert leads[lead][0] == pytest.approx((i + 1) * 100 * 5 / 1000)


def test_leads_fall_back_to_labels_without_codes() -> None:
    item = channel("aVL", label="Lead aVL", coded=False)
    assert lead_name(item) == "aVL"
    assert lead_name(channel("V2", label="nonsense")) == "V2"


def test_missing_limb_leads_are_derived_from_i_and_ii() -> None:
    leads = decode_ecg(two_lead_ecg(60))
    assert leads.derived == frozenset({"III", "aVR", "aVL", "aVF"})
    assert np.allclose(leads.leads["aVF"], leads.leads["II"] - leads.leads["I"] / 2)


def test_paper_has_the_documented_size_and_grid_colours() -> None:
    png = render_ecg_png(SAMPLE.read_bytes())
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert ecg_paper.TRACE_MM == 25 * 10  # 10 s at 25 mm/s
    width_mm = ecg_paper.MARGIN_MM * 2 + ecg_paper.CALIBRATION_MM + 250
    height_px = round(ecg_paper.PAPER_HEIGHT_MM * ecg_paper.PX_PER_MM)
    assert image.size == (round(width_mm * ecg_paper.PX_PER_MM), height_px) == (2700, 1890)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 16) or []}
    assert {ecg_paper.MINOR_COLOUR, ecg_paper.MAJOR_COLOUR, ecg_paper.TRACE_COLOUR} <= colours


def test_major_grid_lines_are_five_millimetres_apart() -> None:
    image = Image.open(io.BytesIO(render_ecg_png(SAMPLE.read_bytes()))).convert("RGB")
    y = round((ecg_paper.HEADER_MM + 2) * ecg_paper.PX_PER_MM)  # inside the grid, above any trace
    row = np.asarray(image)[y]
    major = np.flatnonzero((row == ecg_paper.MAJOR_COLOUR).all(axis=1))
    starts = major[np.insert(np.diff(major) > 1, 0, True)]
    assert set(np.diff(starts).tolist()) == {5 * ecg_paper.PX_PER_MM}


def test_calibration_pulse_is_ten_millimetres_high() -> None:
    image = np.asarray(Image.open(io.BytesIO(render_ecg_png(SAMPLE.read_bytes()))).convert("RGB"))
    x = round((ecg_paper.MARGIN_MM + 1 + 4.5) * ecg_paper.PX_PER_MM)  # middle of the first pulse
    column = image[: round((ecg_paper.HEADER_MM + ecg_paper.ROW_MM) * ecg_paper.PX_PER_MM), x]
    black = np.flatnonzero((column == 0).all(axis=1))
    top = black[black > ecg_paper.HEADER_MM * ecg_paper.PX_PER_MM].min()
    baseline = (ecg_paper.HEADER_MM + ecg_paper.BASELINE_MM) * ecg_paper.PX_PER_MM
    assert abs((baseline - top) - 10 * ecg_paper.PX_PER_MM) <= 2


def test_english_and_chinese_papers_differ_only_in_text() -> None:
    data = SAMPLE.read_bytes()
    zh = np.asarray(Image.open(io.BytesIO(render_ecg_png(data))).convert("RGB"))
    en = np.asarray(Image.open(io.BytesIO(render_ecg_png(data, lang="en"))).convert("RGB"))
    header = round(ecg_paper.HEADER_MM * ecg_paper.PX_PER_MM)
    assert zh.shape == en.shape
    assert not np.array_equal(zh[:header], en[:header])
    assert np.array_equal(zh[header:], en[header:])


def test_without_a_cjk_font_the_paper_is_drawn_in_english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecg_paper, "FONT_CANDIDATES", ())
    ecg_paper.cjk_font_path.cache_clear()
    try:
        png = render_ecg_png(SAMPLE.read_bytes(), lang="zh-CN")
    finally:
        ecg_paper.cjk_font_path.cache_clear()
    assert Image.open(io.BytesIO(png)).size == ecg_paper.paper_size_px()


def test_truncated_waveform_is_a_render_error() -> None:
    ds = pydicom.dcmread(SAMPLE)
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:-1000]
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(RenderError) as caught:
        ecg_measurements(out.getvalue())
    assert caught.value.kind is RenderFailure.TRUNCATED


def test_an_image_is_not_an_ecg() -> None:
    image = (SAMPLE.parents[1] / "ct_head/CT_head_001.dcm").read_bytes()
    with pytest.raises(RenderError) as caught:
        render_ecg_png(image)
    assert caught.value.kind is RenderFailure.NO_PIXEL_DATA


# --- trace geometry: 25 mm/s, 10 mm/mV, 1 mm grid, header numbers --------------------------------

PX = ecg_paper.PX_PER_MM
TRACE_X0 = (ecg_paper.MARGIN_MM + ecg_paper.CALIBRATION_MM) * PX
"""x of t = 0 on every row, px."""


def pulse_ecg(start_s: float, end_s: float, mv: float = 1.0) -> bytes:
    """Lead I flat, lead II 0 mV with a ``mv`` pulse from ``start_s`` to ``end_s`` (10 s, so the
    median the paper centres on stays 0)."""
    ii = np.zeros(10 * RATE)
    ii[round(start_s * RATE):round(end_s * RATE)] = mv
    counts = np.rint(np.stack([np.zeros_like(ii), ii], axis=1) * 1000 / 5).astype(np.int16)
    return ecg_bytes(counts, [channel("I"), channel("II")])


def black_in_row(paper: np.ndarray, row: int) -> np.ndarray:
    """Trace-coloured pixels of one trace row (0-2: the 3x4 block, 3: the rhythm strip)."""
    top = round((ecg_paper.HEADER_MM + row * ecg_paper.ROW_MM) * PX)
    band = np.zeros(paper.shape[:2], dtype=bool)
    band[top:top + round(ecg_paper.ROW_MM * PX)] = True
    return band & (paper == ecg_paper.TRACE_COLOUR).all(axis=2)


def vertical_edges(black: np.ndarray, x_from: float, x_to: float) -> list[float]:
    """x (px) of the near-vertical strokes, unbroken runs taller than 8 mm, between ``x_from``
    and ``x_to`` (lead labels and the baseline are far shorter runs)."""
    tall = []
    for x in range(round(x_from), round(x_to)):
        ys = np.flatnonzero(black[:, x])
        runs = np.split(ys, np.flatnonzero(np.diff(ys) > 1) + 1) if ys.size else []
        if any(run.size >= 8 * PX for run in runs):
            tall.append(x)
    groups = np.split(np.array(tall), np.flatnonzero(np.diff(tall) > 1) + 1) if tall else []
    return [float(g.mean()) for g in groups]


def trace_y(black: np.ndarray, t: float) -> float:
    """Mean y (px) of the trace at time ``t`` of its row's segment."""
    return float(np.flatnonzero(black[:, round(TRACE_X0 + t * 25 * PX)]).mean())


@pytest.mark.parametrize(("row", "segment_s"), [(3, 10.0), (1, 2.5)], ids=["rhythm-strip", "3x4-cell-II"])
def test_a_1_mv_pulse_lands_at_25_mm_per_s_and_stands_10_mm_tall(row: int, segment_s: float) -> None:
    paper = np.asarray(Image.open(io.BytesIO(render_ecg_png(pulse_ecg(1.0, 2.0)))).convert("RGB"))
    black = black_in_row(paper, row)
    # the separator ticks between 3x4 leads are 6 mm tall: below the 8 mm threshold, and outside
    edges = vertical_edges(black, TRACE_X0 + PX, TRACE_X0 + segment_s * 25 * PX - PX)
    assert edges == pytest.approx([TRACE_X0 + t * 25 * PX for t in (1.0, 2.0)], abs=1.5)
    baseline = (ecg_paper.HEADER_MM + row * ecg_paper.ROW_MM + ecg_paper.BASELINE_MM) * PX
    assert trace_y(black, 0.5) == pytest.approx(baseline, abs=1.5)
    assert trace_y(black, 0.5) - trace_y(black, 1.5) == pytest.approx(1.0 * 10 * PX, abs=1.5)


def test_minor_grid_lines_are_one_millimetre_apart_both_ways() -> None:
    paper = np.asarray(Image.open(io.BytesIO(render_ecg_png(pulse_ecg(1.0, 2.0)))).convert("RGB"))
    left, top = round(ecg_paper.MARGIN_MM * PX), round(ecg_paper.HEADER_MM * PX)
    width_mm, height_mm = round(ecg_paper.TRACE_MM + ecg_paper.CALIBRATION_MM), round(4 * ecg_paper.ROW_MM)
    minor = (paper == ecg_paper.MINOR_COLOUR).all(axis=2)
    across = np.flatnonzero(minor[top + round(12.5 * PX)])  # between lines, above row 0's trace
    down = np.flatnonzero(minor[:, left + PX // 2])  # left of the calibration pulses and labels
    assert across.tolist() == [left + i * PX for i in range(width_mm + 1) if i % 5]
    assert down.tolist() == [top + j * PX for j in range(height_mm + 1) if j % 5]


def test_the_header_prints_the_measured_and_the_device_numbers_apart() -> None:
    ds = pydicom.dcmread(SAMPLE)
    for item in ds.WaveformAnnotationSequence:  # the cart's heart rate, 72, becomes 75
        if "NumericValue" in item and float(item.NumericValue) == 72:
            item.NumericValue = "75"
    out = io.BytesIO()
    ds.save_as(out)
    data = out.getvalue()
    measured = ecg_measurements(data)
    lines = ecg_paper.header_lines(paper_header(data), lang="en")
    dash = "—" if ecg_paper.cjk_font_path() else "-"
    assert round(measured.heart_rate_bpm) == 72
    assert lines[0] == f"Measured:  HR 72 bpm    RR {measured.rr_ms:.0f} ms"
    assert lines[1] == f"Device:  HR 75 bpm    PR 164 ms    QRS 92 ms    QT/QTc 388/{dash} ms"
    assert "25 mm/s  10 mm/mV" in lines[2]
    assert ecg_paper.header_lines(paper_header(data))[1].startswith("设备测量") == bool(ecg_paper.cjk_font_path())

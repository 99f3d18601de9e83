"""12-lead ECG: decode waveforms to millivolts, measure heart rate, draw on paper.

Pure: input is the Part 10 bytes of a 12-Lead ECG or General ECG Waveform Storage
instance. Leads are identified by their Channel Source code (SCP-ECG ``5.6.3-9-n``
or MDC ``2:n``, the same lead numbers in both) and, failing that, by Channel Label.
Heart rate and RR come from the signal (a Pan-Tompkins-style detector on lead II);
the numbers the cart stored in the Waveform Annotation Sequence are returned beside
them, never mixed in, so the reader sees both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from relay.county.render import ecg_paper
from relay.county.render.errors import RenderError, RenderFailure
from relay.county.render.image import THUMBNAIL_SIZE, read_dataset, thumbnail_of

_T = TypeVar("_T")

Signal = NDArray[np.float64]

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""The twelve leads, in the conventional order."""

MAX_WAVEFORM_VALUES = 1 << 26
"""Cap on samples x channels of the multiplex group decoded (67 M, default).

Why: a 24-hour Holter at 1 kHz x 12 leads is 1 G values and belongs to another
tool; a resting ECG is 60 k. The cap keeps absurd headers from allocating gigabytes.
"""

# Lead numbers shared by SCP-ECG (5.6.3-9-n) and MDC (2:n), PS3.16 CID 3001.
_LEAD_NUMBERS: dict[int, str] = {
    1: "I", 2: "II", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF",
    3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
}
_LABELS = {name.upper(): name for name in STANDARD_LEADS}
# Millivolts per unit of Channel Sensitivity Units (UCUM code values).
_MV_PER_UNIT = {"uV": 1e-3, "mV": 1.0, "V": 1e3, "nV": 1e-6}
_ASSUMED_UNIT = "uV"  # carts that omit the units almost always mean microvolts

# Global measurements: MDC codes (PS3.16 CID 3000-range ECG measurements) to fields.
_MEASUREMENT_CODES: dict[str, str] = {
    "2:16770": "heart_rate_bpm", "2:16168": "rr_ms", "2:15872": "pr_ms",
    "2:16156": "qrs_ms", "2:16160": "qt_ms", "2:16164": "qtc_ms",
}


@dataclass(frozen=True)
class Ecg:
    """Decoded leads in millivolts on a common time base."""

    sampling_hz: float
    leads: dict[str, Signal]
    """Standard lead name -> samples in mV; missing limb leads derived from I and II."""
    derived: frozenset[str] = frozenset()
    """Leads computed from I and II because the file did not carry them."""
    filters: ecg_paper.Filters = field(default_factory=ecg_paper.Filters)
    """The first channel's filter settings (low, high, notch in Hz) as the cart recorded them."""

    @property
    def seconds(self) -> float:
        """Duration of the recording."""
        return max((s.size for s in self.leads.values()), default=0) / self.sampling_hz


@dataclass(frozen=True)
class DeviceValue:
    """One numeric measurement the cart stored: concept name, value, unit (as sent)."""

    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class DeviceMeasurements:
    """What the acquiring device reported (Waveform Annotation Sequence); None when absent."""

    heart_rate_bpm: float | None = None
    rr_ms: float | None = None
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_ms: float | None = None
    values: tuple[DeviceValue, ...] = ()
    """Every numeric annotation, including ones not named above (axes, amplitudes)."""
    statements: tuple[str, ...] = ()
    """Free-text interpretation statements, e.g. ``窦性心律``."""


@dataclass(frozen=True)
class EcgMeasurements:
    """Heart rate and RR computed from the signal, and the device's own numbers."""

    heart_rate_bpm: float | None
    """60000 / mean RR; None when fewer than two R peaks were found."""
    rr_ms: float | None
    """Mean R-R interval in milliseconds."""
    r_peaks: tuple[int, ...]
    """Sample indexes of the detected R peaks."""
    lead: str | None
    """Lead the peaks were detected on (II unless it is missing)."""
    device: DeviceMeasurements = field(default_factory=DeviceMeasurements)


def decode_ecg(data: bytes) -> Ecg:
    """Decode the first original multiplex group of an ECG instance to mV per lead."""
    try:
        return _decode(read_dataset(data))
    except RenderError:
        raise
    except Exception as exc:  # pydicom/numpy errors on malformed waveforms
        raise RenderError(f"waveform could not be decoded: {type(exc).__name__}: {exc}") from exc


def _guarded(what: str, run: Callable[[Ecg, EcgMeasurements], _T], data: bytes) -> _T:
    """``run`` on the decoded and measured ECG; anything but a RenderError becomes one."""
    try:
        ds = read_dataset(data)
        ecg = _decode(ds)
        return run(ecg, _measure(ecg, device_measurements(ds)))
    except RenderError:
        raise
    except Exception as exc:  # pydicom/numpy/Pillow errors on malformed waveforms
        raise RenderError(f"ECG could not be {what}: {type(exc).__name__}: {exc}") from exc


def ecg_measurements(data: bytes) -> EcgMeasurements:
    """Heart rate and mean RR from lead II, plus the device's stored measurements."""
    return _guarded("measured", lambda _ecg, measured: measured, data)


def paper_header(data: bytes) -> ecg_paper.Header:
    """The numbers the paper prints above the grid: measured from the signal and device-stored."""
    return _guarded("measured", lambda ecg, measured: _header(ecg, measured), data)


def render_ecg_png(data: bytes, *, lang: str = "zh-CN") -> bytes:
    """Standard 12-lead paper (3x4 + lead II rhythm strip) as PNG; see :mod:`ecg_paper`."""
    return _guarded("drawn", lambda ecg, measured: ecg_paper.draw_png(
        ecg.leads, ecg.sampling_hz, _header(ecg, measured), lang=lang), data)


def ecg_thumbnail(data: bytes, *, size: int = THUMBNAIL_SIZE) -> bytes:
    """The ECG's paper (English text: unreadable at this size anyway) as a small JPEG."""
    return _guarded("drawn", lambda ecg, measured: thumbnail_of(ecg_paper.draw(
        ecg.leads, ecg.sampling_hz, _header(ecg, measured), lang="en"), size=size), data)


def _header(ecg: Ecg, m: EcgMeasurements) -> ecg_paper.Header:
    d = m.device
    return ecg_paper.Header(
        heart_rate_bpm=m.heart_rate_bpm, rr_ms=m.rr_ms,
        device_heart_rate_bpm=d.heart_rate_bpm, device_pr_ms=d.pr_ms, device_qrs_ms=d.qrs_ms,
        device_qt_ms=d.qt_ms, device_qtc_ms=d.qtc_ms, statements=d.statements,
        filters=ecg.filters, derived=tuple(name for name in STANDARD_LEADS if name in ecg.derived),
    )


# --- decoding -------------------------------------------------------------------


def _decode(ds: Dataset) -> Ecg:
    groups = ds.get("WaveformSequence")
    if not groups:
        raise RenderError("the instance has no Waveform Sequence", kind=RenderFailure.NO_PIXEL_DATA)
    index = _choose_group(groups)
    group = groups[index]
    _check_group(group)
    values = ds.waveform_array(index)  # (samples, channels), Channel Sensitivity units
    leads: dict[str, Signal] = {}
    for column, channel in enumerate(group.ChannelDefinitionSequence):
        name, scale = lead_name(channel), _mv_per_unit(channel)
        if name is not None and scale is not None and name not in leads:
            leads[name] = values[:, column] * scale
    if not leads:
        raise RenderError("no ECG lead could be identified in the waveform", kind=RenderFailure.UNSUPPORTED)
    rate = float(group.get("SamplingFrequency", 0) or 0)
    if not rate > 0:
        raise RenderError("Sampling Frequency is missing or not positive", kind=RenderFailure.CORRUPT)
    derived = _derive_limb_leads(leads)
    return Ecg(rate, leads, frozenset(derived), _filters(group.ChannelDefinitionSequence[0]))


def _choose_group(groups: Any) -> int:
    """The first ORIGINAL group (rhythm data) rather than a derived median beat."""
    for index, group in enumerate(groups):
        if str(group.get("WaveformOriginality", "")).upper() == "ORIGINAL":
            return index
    return 0


def _check_group(group: Dataset) -> None:
    try:
        channels, samples = int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples)
        bits = int(group.WaveformBitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RenderError(f"waveform group attributes missing: {exc}", kind=RenderFailure.CORRUPT) from exc
    if channels < 1 or samples < 1 or bits not in (8, 16, 32, 64):
        raise RenderError(f"invalid waveform group: {channels} channels, {samples} samples, {bits} bits")
    if channels * samples > MAX_WAVEFORM_VALUES:
        raise RenderError(f"waveform of {channels}x{samples} values is beyond the cap", kind=RenderFailure.TOO_LARGE)
    expected = channels * samples * bits // 8
    actual = len(group.get("WaveformData", b"") or b"")
    if actual < expected:
        raise RenderError(
            f"waveform data is truncated: {actual} of {expected} bytes", kind=RenderFailure.TRUNCATED
        )
    if len(group.get("ChannelDefinitionSequence", [])) != channels:
        raise RenderError("Channel Definition Sequence does not match the channel count")


def lead_name(channel: Dataset) -> str | None:
    """Standard lead name of a channel: Channel Source code first, then Channel Label."""
    for item in channel.get("ChannelSourceSequence", []):
        name = _lead_from_code(str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")))
        if name is not None:
            return name
    return _lead_from_label(str(channel.get("ChannelLabel", "")))


def _lead_from_code(value: str, scheme: str) -> str | None:
    value = value.strip()
    if scheme.upper() == "SCPECG" and value.startswith("5.6.3-9-"):
        number = value.rsplit("-", 1)[-1]
    elif scheme.upper() == "MDC" and value.startswith("2:"):
        number = value[2:]
    else:
        return None
    return _LEAD_NUMBERS.get(int(number)) if number.isdigit() else None


def _lead_from_label(label: str) -> str | None:
    text = label.strip().upper().replace("LEAD", "").replace(" ", "").replace("_", "")
    return _LABELS.get(text)


def _mv_per_unit(channel: Dataset) -> float | None:
    """Millivolts per Channel Sensitivity unit; None for a non-voltage channel."""
    units = channel.get("ChannelSensitivityUnitsSequence")
    code = str(units[0].get("CodeValue", "")) if units else _ASSUMED_UNIT
    return _MV_PER_UNIT.get(code.strip())


def _derive_limb_leads(leads: dict[str, Signal]) -> list[str]:
    """Compute III, aVR, aVL, aVF from I and II when missing (8-lead carts send only those)."""
    if "I" not in leads or "II" not in leads:
        return []
    one, two = leads["I"], leads["II"]
    formulas = {"III": two - one, "aVR": -(one + two) / 2.0, "aVL": one - two / 2.0, "aVF": two - one / 2.0}
    missing = [name for name in formulas if name not in leads]
    for name in missing:
        leads[name] = formulas[name]
    return missing


def _filters(channel: Dataset) -> ecg_paper.Filters:
    def hz(keyword: str) -> float | None:
        value = channel.get(keyword)
        return float(value) if value is not None and str(value).strip() else None

    return ecg_paper.Filters(hz("FilterLowFrequency"), hz("FilterHighFrequency"), hz("NotchFilterFrequency"))


# --- device numbers ------------------------------------------------------------


def device_measurements(ds: Dataset) -> DeviceMeasurements:
    """Numeric values and text statements of the Waveform Annotation Sequence."""
    named: dict[str, float] = {}
    values: list[DeviceValue] = []
    statements: list[str] = []
    for item in ds.get("WaveformAnnotationSequence", []):
        text = item.get("UnformattedTextValue")
        if text:
            statements.append(str(text).strip())
        parsed = _device_value(item)
        if parsed is None:
            continue
        value, field_name = parsed
        values.append(value)
        if field_name is not None and field_name not in named:
            named[field_name] = _normalise(value, field_name)
    return DeviceMeasurements(**named, values=tuple(values), statements=tuple(statements))


def _device_value(item: Dataset) -> tuple[DeviceValue, str | None] | None:
    concept = item.get("ConceptNameCodeSequence")
    if not concept or item.get("NumericValue") is None:
        return None
    code = concept[0]
    value = _first_float(item.NumericValue)
    units = item.get("MeasurementUnitsCodeSequence")
    unit = str(units[0].get("CodeValue", "")) if units else ""
    meaning = str(code.get("CodeMeaning", ""))
    field_name = _MEASUREMENT_CODES.get(str(code.get("CodeValue", "")).strip()) or _field_from_meaning(meaning)
    return DeviceValue(meaning, value, unit), field_name


def _first_float(value: Any) -> float:
    """The first value of a DS that may be multi-valued."""
    if isinstance(value, str | bytes) or not hasattr(value, "__getitem__"):
        return float(value)
    return float(value[0])


def _field_from_meaning(meaning: str) -> str | None:
    """Match a measurement by its Code Meaning when the code is not one we know."""
    text = meaning.lower()
    checks = (("qtc", "qtc_ms"), ("qrs", "qrs_ms"), ("qt ", "qt_ms"), ("pr ", "pr_ms"),
              ("rr ", "rr_ms"), ("heart rate", "heart_rate_bpm"), ("ventricular rate", "heart_rate_bpm"))
    padded = text + " "
    return next((name for needle, name in checks if needle in padded), None)


def _normalise(value: DeviceValue, field_name: str) -> float:
    """Intervals to milliseconds (a cart may send seconds); rates stay per minute."""
    if field_name.endswith("_ms") and value.unit.strip() == "s":
        return value.value * 1000.0
    return value.value


# --- R-peak detection ----------------------------------------------------------

QRS_BAND_HZ = (10.0, 25.0)
"""Pass band of the QRS detector, Hz (default 10-25).

Pan & Tompkins used 5-15 Hz; a T wave taller than its QRS (hyperkalaemia, low-voltage
lead II) then still carries a third of the QRS energy and is counted as a beat. From
10 Hz up a T wave has almost no energy while a wide (50 ms) QRS keeps enough; tested
from 35 to 220 bpm with tall T waves, 0.15 mV noise and 50 Hz mains.
"""

INTEGRATION_S = 0.150
"""Moving-window integration width, seconds (default 150 ms, a wide QRS)."""

REFRACTORY_S = 0.200
"""No second beat within this time, seconds (default 200 ms, physiological: caps detection at 300 bpm)."""

T_WAVE_S = 0.360
"""A candidate this soon after a beat, with under half its steepest slope, is its T wave (seconds)."""

THRESHOLD = 0.3
"""Peak threshold as a fraction of the 99th percentile of the integrated energy."""


def r_peaks(signal: Signal, sampling_hz: float) -> NDArray[np.int64]:
    """Sample indexes of R peaks: band-pass, derivative, square, integrate, threshold."""
    if signal.size < int(sampling_hz):
        return np.zeros(0, dtype=np.int64)
    filtered = _band_pass(signal - np.median(signal), sampling_hz, *QRS_BAND_HZ)
    energy = np.gradient(filtered) ** 2
    width = max(1, round(INTEGRATION_S * sampling_hz))
    integrated = np.convolve(energy, np.ones(width) / width, mode="same")
    level = float(np.percentile(integrated, 99))
    if level <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = _local_maxima(integrated, THRESHOLD * level, int(REFRACTORY_S * sampling_hz))
    reach = int(0.08 * sampling_hz)
    beats = _drop_t_waves(candidates, np.abs(np.gradient(filtered)), reach, int(T_WAVE_S * sampling_hz))
    return _refine(beats, filtered, reach)


def _drop_t_waves(candidates: list[int], slope: Signal, reach: int, window: int) -> list[int]:
    """Pan-Tompkins T-wave rule: a tall T has energy like a QRS but a much gentler slope."""

    def steepest(index: int) -> float:
        return float(slope[max(0, index - reach): index + reach + 1].max())

    kept: list[int] = []
    for index in candidates:
        if kept and index - kept[-1] < window and steepest(index) < 0.5 * steepest(kept[-1]):
            continue
        kept.append(index)
    return kept


def _band_pass(signal: Signal, rate: float, low: float, high: float) -> Signal:
    """Zero-phase FFT band-pass with cosine tapers 1 Hz wide at both edges.

    The record is mirrored by up to a second at each end first, so the FFT's circular
    wrap does not carry the last beat onto the first samples.
    """
    pad = min(signal.size - 1, round(rate))
    padded = np.pad(signal, pad, mode="reflect")
    spectrum = np.fft.rfft(padded)
    freqs = np.fft.rfftfreq(padded.size, 1.0 / rate)
    gain = np.clip(freqs - (low - 1.0), 0.0, 1.0) * np.clip((high + 1.0) - freqs, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    filtered: Signal = np.fft.irfft(spectrum * gain, n=padded.size)[pad: pad + signal.size]
    return filtered


def _local_maxima(x: Signal, threshold: float, spacing: int) -> list[int]:
    """Greedy: the highest remaining point above threshold wins its refractory window."""
    order = np.argsort(x)[::-1]
    taken = np.zeros(x.size, dtype=bool)
    peaks: list[int] = []
    for index in order:
        if x[index] < threshold:
            break
        if taken[index]:
            continue
        peaks.append(int(index))
        taken[max(0, index - spacing): index + spacing + 1] = True
    return sorted(peaks)


def _refine(candidates: list[int], filtered: Signal, reach: int) -> NDArray[np.int64]:
    """Move each candidate to the largest band-passed deflection within ``reach`` samples."""
    out = []
    for index in candidates:
        start, stop = max(0, index - reach), min(filtered.size, index + reach + 1)
        out.append(start + int(np.argmax(np.abs(filtered[start:stop]))))
    return np.asarray(sorted(set(out)), dtype=np.int64)


def _measure(ecg: Ecg, device: DeviceMeasurements) -> EcgMeasurements:
    lead = next((name for name in ("II", "I", "V5", "V2") if name in ecg.leads), None)
    if lead is None:
        return EcgMeasurements(None, None, (), None, device)
    peaks = r_peaks(ecg.leads[lead], ecg.sampling_hz)
    if peaks.size < 2:
        return EcgMeasurements(None, None, tuple(int(p) for p in peaks), lead, device)
    rr_ms = float(np.mean(np.diff(peaks))) * 1000.0 / ecg.sampling_hz
    return EcgMeasurements(60000.0 / rr_ms, rr_ms, tuple(int(p) for p in peaks), lead, device)

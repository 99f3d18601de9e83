"""Standard ECG paper drawn with Pillow: 3x4 leads, a lead II rhythm strip, a header.

Geometry (all knobs in millimetres of paper, converted at :data:`PX_PER_MM`):

* 25 mm/s, 10 mm/mV; 1 mm minor and 5 mm major grid;
* rows I/aVR/V1/V4, II/aVL/V2/V5, III/aVF/V3/V6, each column 2.5 s of the same
  simultaneous recording (column k shows 2.5k..2.5k+2.5 s), then 10 s of lead II;
* a 1 mV x 200 ms calibration pulse at the start of every row;
* a header with the heart rate and RR measured from the signal and, on its own
  line, the device's numbers, so the reader can compare them.

Text is zh-CN by default and needs a CJK font (:data:`FONT_CANDIDATES`); without one
Pillow's built-in font is used and everything is written in English.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

PX_PER_MM = 10
"""Pixels per millimetre of paper (default 10, about 254 dpi: 1 mm grid squares are 10 px)."""

SPEED_MM_PER_S = 25.0
"""Paper speed, mm/s (the standard 25)."""

GAIN_MM_PER_MV = 10.0
"""Amplitude scale, mm/mV (the standard 10)."""

RHYTHM_S = 10.0
"""Length of the lead II rhythm strip and of the 3x4 block, seconds."""

MARGIN_MM = 5.0
"""White border around the grid, mm."""

CALIBRATION_MM = 10.0
"""Width of the calibration-pulse area left of the traces, mm (pulse itself is 5 mm = 200 ms)."""

HEADER_MM = 24.0
"""Height of the text header above the grid, mm."""

ROW_MM = 40.0
"""Height of each of the four trace rows, mm."""

BASELINE_MM = 25.0
"""Baseline of a trace below the top of its row, mm: on a 5 mm line, 2.5 mV of room above, 1.5 mV below."""

TRACE_MM = SPEED_MM_PER_S * RHYTHM_S
"""Width of the trace area: 250 mm for 10 s at 25 mm/s."""

PAPER_WIDTH_MM = MARGIN_MM + CALIBRATION_MM + TRACE_MM + MARGIN_MM
"""Total width, mm (270 with the defaults: 2700 px)."""

PAPER_HEIGHT_MM = HEADER_MM + 4 * ROW_MM + MARGIN_MM
"""Total height, mm (189 with the defaults: 1890 px)."""

PAPER_COLOUR = (255, 255, 255)
MINOR_COLOUR = (255, 192, 192)
"""1 mm grid lines (pink)."""
MAJOR_COLOUR = (232, 96, 96)
"""5 mm grid lines (red)."""
TRACE_COLOUR = (0, 0, 0)
TEXT_COLOUR = (0, 0, 0)

LAYOUT: tuple[tuple[str, str, str, str], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
"""The 3x4 block; the fourth row is the lead II rhythm strip."""

RHYTHM_LEAD = "II"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch, Fedora
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
"""CJK fonts tried in order; in a collection the Simplified Chinese face is preferred."""

LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "hr": "心率", "rr": "RR间期", "pr": "PR间期", "qrs": "QRS时限", "qt": "QT/QTc",
        "bpm": "次/分", "measured": "波形计算", "device": "设备测量", "derived": "由 I、II 导出",
        "scale": "走纸 25 mm/s  增益 10 mm/mV", "filter": "滤波", "notch": "陷波",
        "none": "无", "missing": "(未记录)",
    },
    "en": {
        "hr": "HR", "rr": "RR", "pr": "PR", "qrs": "QRS", "qt": "QT/QTc",
        "bpm": "bpm", "measured": "Measured", "device": "Device", "derived": "derived from I and II",
        "scale": "25 mm/s  10 mm/mV", "filter": "Filter", "notch": "Notch",
        "none": "none", "missing": "(not recorded)",
    },
}
"""Header wording per language; unknown languages get English."""


@dataclass(frozen=True)
class Filters:
    """Filter settings of the recording, Hz; None when the cart did not say."""

    low_hz: float | None = None
    high_hz: float | None = None
    notch_hz: float | None = None


@dataclass(frozen=True)
class Header:
    """The numbers printed above the grid; None prints as a dash."""

    heart_rate_bpm: float | None = None
    rr_ms: float | None = None
    device_heart_rate_bpm: float | None = None
    device_pr_ms: float | None = None
    device_qrs_ms: float | None = None
    device_qt_ms: float | None = None
    device_qtc_ms: float | None = None
    statements: tuple[str, ...] = ()
    filters: Filters = Filters()
    derived: tuple[str, ...] = ()


def mm(value: float) -> int:
    """Millimetres of paper to pixels."""
    return round(value * PX_PER_MM)


def paper_size_px() -> tuple[int, int]:
    """(width, height) of the PNG in pixels."""
    return mm(PAPER_WIDTH_MM), mm(PAPER_HEIGHT_MM)


def draw_png(
    leads: Mapping[str, NDArray[np.float64]], sampling_hz: float, header: Header, *, lang: str = "zh-CN"
) -> bytes:
    """Draw ``leads`` (mV) on paper and return PNG bytes."""
    image = draw(leads, sampling_hz, header, lang=lang)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def draw(
    leads: Mapping[str, NDArray[np.float64]], sampling_hz: float, header: Header, *, lang: str = "zh-CN"
) -> Image.Image:
    """The paper as an RGB image of :func:`paper_size_px`."""
    font_path = cjk_font_path()
    if font_path is None:
        lang = "en"  # Pillow's built-in font has no CJK glyphs
    labels = LABELS.get(lang, LABELS["en"])
    image = Image.new("RGB", paper_size_px(), PAPER_COLOUR)
    canvas = ImageDraw.Draw(image)
    _grid(canvas)
    lead_font, text_font = _font(font_path, 3.5), _font(font_path, 3.2)
    centred = {name: signal - float(np.median(signal)) for name, signal in leads.items()}
    for row, names in enumerate(LAYOUT):
        _calibration(canvas, row)
        for column, name in enumerate(names):
            start = column * RHYTHM_S / 4.0
            _trace(canvas, centred.get(name), sampling_hz, row, start, RHYTHM_S / 4.0)
            _label(canvas, name, row, start, lead_font, labels if name not in centred else None)
            if column:
                _separator(canvas, row, start)
    _calibration(canvas, 3)
    _trace(canvas, centred.get(RHYTHM_LEAD), sampling_hz, 3, 0.0, RHYTHM_S)
    _label(canvas, RHYTHM_LEAD, 3, 0.0, lead_font, labels if RHYTHM_LEAD not in centred else None)
    _header(canvas, header_lines(header, lang=lang), text_font)
    return image


def _grid(canvas: ImageDraw.ImageDraw) -> None:
    left, top = mm(MARGIN_MM), mm(HEADER_MM)
    right, bottom = mm(PAPER_WIDTH_MM - MARGIN_MM), mm(HEADER_MM + 4 * ROW_MM)
    width_mm, height_mm = int(PAPER_WIDTH_MM - 2 * MARGIN_MM), int(4 * ROW_MM)
    for major in (False, True):
        colour, step = (MAJOR_COLOUR, 5) if major else (MINOR_COLOUR, 1)
        line = 2 if major else 1
        for i in range(0, width_mm + 1, step):
            x = left + i * PX_PER_MM
            canvas.line([(x, top), (x, bottom)], fill=colour, width=line)
        for j in range(0, height_mm + 1, step):
            y = top + j * PX_PER_MM
            canvas.line([(left, y), (right, y)], fill=colour, width=line)


def _baseline_y(row: int) -> float:
    """Baseline of a row in pixels (see :data:`BASELINE_MM`)."""
    return (HEADER_MM + row * ROW_MM + BASELINE_MM) * PX_PER_MM


def _calibration(canvas: ImageDraw.ImageDraw, row: int) -> None:
    """1 mV (10 mm) high, 200 ms (5 mm) wide pulse with 2 mm of baseline either side."""
    x0, y0 = (MARGIN_MM + 1.0) * PX_PER_MM, _baseline_y(row)
    up = y0 - GAIN_MM_PER_MV * PX_PER_MM
    steps = (0.0, 2.0, 2.0, 7.0, 7.0, 9.0)
    heights = (y0, y0, up, up, y0, y0)
    canvas.line([(x0 + s * PX_PER_MM, h) for s, h in zip(steps, heights, strict=True)], fill=TRACE_COLOUR, width=2)


def _trace(
    canvas: ImageDraw.ImageDraw,
    signal: NDArray[np.float64] | None,
    rate: float,
    row: int,
    start_s: float,
    seconds: float,
) -> None:
    if signal is None or signal.size == 0:
        return
    first, last = round(start_s * rate), round((start_s + seconds) * rate)
    piece = signal[first: min(last, signal.size)]
    if piece.size < 2:
        return
    t = start_s + np.arange(piece.size) / rate
    x = (MARGIN_MM + CALIBRATION_MM + t * SPEED_MM_PER_S) * PX_PER_MM
    y = _baseline_y(row) - piece * GAIN_MM_PER_MV * PX_PER_MM
    y = np.clip(y, mm(HEADER_MM), mm(HEADER_MM + 4 * ROW_MM))
    canvas.line(list(zip(x.tolist(), y.tolist(), strict=True)), fill=TRACE_COLOUR, width=2, joint="curve")


def _separator(canvas: ImageDraw.ImageDraw, row: int, start_s: float) -> None:
    """Short vertical tick where one lead ends and the next begins."""
    x = (MARGIN_MM + CALIBRATION_MM + start_s * SPEED_MM_PER_S) * PX_PER_MM
    y = _baseline_y(row)
    canvas.line([(x, y - mm(3)), (x, y + mm(3))], fill=TRACE_COLOUR, width=2)


def _label(
    canvas: ImageDraw.ImageDraw, name: str, row: int, start_s: float, font: Font, missing: dict[str, str] | None
) -> None:
    """Lead name at the top left of its segment; ``missing`` (the wording) when the lead is absent."""
    x = (MARGIN_MM + CALIBRATION_MM + start_s * SPEED_MM_PER_S + 1.5) * PX_PER_MM
    y = (HEADER_MM + row * ROW_MM + 1.5) * PX_PER_MM
    text = name if missing is None else f"{name} {missing['missing']}"
    box = canvas.textbbox((x, y), text, font=font)
    pad = 4  # px of paper colour around the text so grid lines do not cut the glyphs
    canvas.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=PAPER_COLOUR)
    canvas.text((x, y), text, fill=TEXT_COLOUR, font=font)


def header_lines(h: Header, *, lang: str = "zh-CN") -> list[str]:
    """The header :func:`draw` prints, line by line: the numbers measured from the signal,
    the device's own numbers, then statements, scale and filters. English when no CJK font
    is installed (Pillow's built-in font has no CJK glyphs)."""
    cjk = cjk_font_path() is not None
    t = LABELS.get(lang if cjk else "en", LABELS["en"])
    dash = "—" if cjk else "-"  # Pillow's built-in font has no em dash

    def num(value: float | None) -> str:
        return dash if value is None else f"{value:.0f}"

    device = (h.device_heart_rate_bpm, h.device_pr_ms, h.device_qrs_ms, h.device_qt_ms, h.device_qtc_ms)
    device_line = (
        f"{t['device']}:  {t['hr']} {num(h.device_heart_rate_bpm)} {t['bpm']}    {t['pr']} {num(h.device_pr_ms)} ms"
        f"    {t['qrs']} {num(h.device_qrs_ms)} ms    {t['qt']} {num(h.device_qt_ms)}/{num(h.device_qtc_ms)} ms"
        if any(v is not None for v in device) else f"{t['device']}:  {t['none']}"
    )
    return [
        f"{t['measured']}:  {t['hr']} {num(h.heart_rate_bpm)} {t['bpm']}    {t['rr']} {num(h.rr_ms)} ms",
        device_line,
        "    ".join(_third_line(h, t, cjk=cjk)),
    ]


def _header(canvas: ImageDraw.ImageDraw, lines: list[str], font: Font) -> None:
    for index, text in enumerate(lines):
        canvas.text((mm(MARGIN_MM), mm(2.0 + index * 7.0)), text, fill=TEXT_COLOUR, font=font)


def _third_line(h: Header, t: dict[str, str], *, cjk: bool) -> list[str]:
    statements = [s for s in h.statements if cjk or s.isascii()]
    parts = ["; ".join(statements)] if statements else []
    parts.append(t["scale"])
    f = h.filters
    if f.low_hz is not None and f.high_hz is not None:
        parts.append(f"{t['filter']} {f.low_hz:g}-{f.high_hz:g} Hz")
    if f.notch_hz:
        parts.append(f"{t['notch']} {f.notch_hz:g} Hz")
    if h.derived:
        parts.append(f"{', '.join(h.derived)} {t['derived']}")
    return parts


@functools.lru_cache(maxsize=1)
def cjk_font_path() -> tuple[str, int] | None:
    """(path, face index) of the first installed CJK font, preferring a Simplified Chinese face."""
    for path in FONT_CANDIDATES:
        try:
            faces = [ImageFont.truetype(path, 12, index=i) for i in range(_face_count(path))]
        except OSError:
            continue
        names = [" ".join(part or "" for part in face.getname()) for face in faces]
        preferred = next((i for i, n in enumerate(names) if " SC" in n or "sc" in n.split()), 0)
        return path, preferred
    return None


def _face_count(path: str) -> int:
    """Faces in a font collection (1 for a plain font file)."""
    if not path.lower().endswith(".ttc"):
        return 1
    with open(path, "rb") as handle:
        head = handle.read(12)
    return int.from_bytes(head[8:12], "big") if head[:4] == b"ttcf" else 1


def _font(found: tuple[str, int] | None, size_mm: float) -> Font:
    if found is None:
        return ImageFont.load_default(size=mm(size_mm))
    return ImageFont.truetype(found[0], mm(size_mm), index=found[1])

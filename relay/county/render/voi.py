"""Grey-scale transforms of PS3.3 C.11: Modality LUT, VOI LUT and window functions.

Pure numpy on one frame. Inputs are stored values; the output of :func:`to_display`
is the 8-bit P-value a screen shows. Rounding to 8 bits is *half up*
(``floor(y + 0.5)``) so a test can compute the expected byte by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from relay.county.render.errors import RenderError, RenderFailure

Float = NDArray[np.float64]
Byte = NDArray[np.uint8]

Y_MIN = 0.0
"""Lowest display value (black)."""

Y_MAX = 255.0
"""Highest display value (white): the output is 8-bit."""

FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
"""VOI LUT Function (0028,1056) values we honour; anything else falls back to LINEAR."""


@dataclass(frozen=True)
class Window:
    """A window centre/width pair in modality units (e.g. HU), with its VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"


def lut_array(item: Dataset, *, signed_first: bool) -> tuple[int, NDArray[np.int64], int]:
    """Return (first mapped value, LUT entries, bits per entry) of a Modality or VOI LUT item.

    ``LUTData`` arrives as a list of ints (US) or as raw bytes (OW) depending on the
    transfer syntax; both are accepted. A first mapped value above 32767 is read as
    signed when the pixel data is signed (PS3.3 C.11.1.1).
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise RenderError("LUT Descriptor must have three values", kind=RenderFailure.CORRUPT)
    entries, first, bits = descriptor
    entries = entries or 65536
    if signed_first and first > 32767:
        first -= 65536
    raw: Any = item.LUTData
    if isinstance(raw, bytes | bytearray):
        dtype = "<u1" if len(raw) == entries else "<u2"
        data = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    else:
        data = np.asarray(raw if isinstance(raw, Sequence) else [raw], dtype=np.int64)
    if data.size < entries:
        raise RenderError(f"LUT Data holds {data.size} of {entries} entries", kind=RenderFailure.CORRUPT)
    return first, data[:entries], bits


def _apply_lut(values: Float, first: int, lut: NDArray[np.int64]) -> Float:
    """Look values up in ``lut``; values outside the table take its first or last entry."""
    index = np.clip(np.rint(values) - first, 0, lut.size - 1).astype(np.int64)
    out: Float = lut[index].astype(np.float64)
    return out


def modality(stored: NDArray[Any], ds: Dataset) -> Float:
    """Stored values to modality values: Modality LUT Sequence if present, else rescale.

    Rescale Slope defaults to 1 and Rescale Intercept to 0 when absent (MR, US, ...).
    """
    values = stored.astype(np.float64)
    sequence = ds.get("ModalityLUTSequence")
    if sequence:
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        first, lut, _ = lut_array(sequence[0], signed_first=signed)
        return _apply_lut(values, first, lut)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def linear(x: Float, c: float, w: float) -> Float:
    """PS3.3 C.11.2.1.2.1 LINEAR: the "c - 0.5" and "w - 1" formula; needs w >= 1."""
    low = c - 0.5 - (w - 1.0) / 2.0
    high = c - 0.5 + (w - 1.0) / 2.0
    span = w - 1.0
    if span <= 0:  # w == 1: a pure threshold at c - 0.5
        return np.where(x <= low, Y_MIN, Y_MAX).astype(np.float64)
    y = ((x - (c - 0.5)) / span + 0.5) * (Y_MAX - Y_MIN) + Y_MIN
    return np.where(x <= low, Y_MIN, np.where(x > high, Y_MAX, y))


def linear_exact(x: Float, c: float, w: float) -> Float:
    """PS3.3 C.11.2.1.3.2 LINEAR_EXACT: no half-unit shifts; needs w > 0."""
    y = ((x - c) / w + 0.5) * (Y_MAX - Y_MIN) + Y_MIN
    return np.where(x <= c - w / 2.0, Y_MIN, np.where(x > c + w / 2.0, Y_MAX, y))


def sigmoid(x: Float, c: float, w: float) -> Float:
    """PS3.3 C.11.2.1.3.1 SIGMOID: ``(ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin``."""
    with np.errstate(over="ignore"):
        return (Y_MAX - Y_MIN) / (1.0 + np.exp(-4.0 * (x - c) / w)) + Y_MIN


def apply_window(x: Float, window: Window) -> Float:
    """Apply ``window`` with its VOI LUT Function; the width limits are checked by the caller."""
    if window.function == "SIGMOID":
        return sigmoid(x, window.center, window.width)
    if window.function == "LINEAR_EXACT":
        return linear_exact(x, window.center, window.width)
    return linear(x, window.center, window.width)


def apply_voi_lut(x: Float, item: Dataset, *, signed: bool) -> Float:
    """Apply a VOI LUT Sequence item and rescale its output range (LUT bits) to 0..255."""
    first, lut, bits = lut_array(item, signed_first=signed)
    out = _apply_lut(x, first, lut)
    top = float((1 << bits) - 1) if 0 < bits <= 16 else float(max(int(lut.max()), 1))
    return np.clip(out / top, 0.0, 1.0) * (Y_MAX - Y_MIN) + Y_MIN


def to_display(y: Float) -> Byte:
    """Round display values half up to 8 bits."""
    return np.clip(np.floor(y + 0.5), Y_MIN, Y_MAX).astype(np.uint8)


def function_of(ds: Dataset) -> str:
    """The file's VOI LUT Function (0028,1056), or LINEAR when absent or unknown."""
    name = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return name if name in FUNCTIONS else "LINEAR"


def window_is_valid(window: Window) -> bool:
    """LINEAR needs width >= 1 (PS3.3 C.11.2.1.2.1); the other functions need width > 0."""
    if not (np.isfinite(window.center) and np.isfinite(window.width)):
        return False
    return window.width >= 1.0 if window.function == "LINEAR" else window.width > 0.0


def file_window(ds: Dataset) -> Window | None:
    """The first Window Center/Width pair of the file, if present and valid."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    window = Window(c, w, function_of(ds))
    return window if window_is_valid(window) else None


def _is_multi(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def full_range(values: Float, mask: NDArray[np.bool_] | None) -> Window:
    """A LINEAR_EXACT window mapping the frame's min to black and max to white.

    ``mask`` marks pixels to ignore (pixel padding); an all-padding frame uses all pixels.
    """
    chosen = values[~mask] if mask is not None and not mask.all() else values
    low, high = float(chosen.min()), float(chosen.max())
    if high <= low:
        return Window(low + 0.5, 1.0, "LINEAR_EXACT")
    return Window((low + high) / 2.0, high - low, "LINEAR_EXACT")

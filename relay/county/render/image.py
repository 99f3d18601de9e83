"""Render one frame of a DICOM image to 8 bits for display (PNG, JPEG, thumbnails).

Pure: the input is the Part 10 bytes of one instance, the output a Pillow image or
encoded bytes; nothing here touches a server or the disk.

Pipeline, in the order of PS3.3 C.11 / PS3.14:

1. decode the requested frame with pydicom's pixel-data decoders (native, deflate,
   RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K, as far as the
   installed plugins support them);
2. grey-scale: Modality LUT (Modality LUT Sequence, else Rescale Slope/Intercept);
   VOI: caller's window > the file's first Window Center/Width > the file's first
   VOI LUT Sequence item > min/max of the frame (pixel padding excluded); the window
   function is the file's VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID), also
   for a caller's window; then MONOCHROME1 is inverted;
3. colour: RGB as is (scaled to 8 bits); YBR_FULL / YBR_FULL_422 to RGB unless the
   decoder already did it; PALETTE COLOR through its palette LUTs;
4. non-square pixels (Pixel Spacing or Pixel Aspect Ratio) are stretched square, and
   ``size`` fits the longest side.

Every failure, including pydicom's and numpy's own exceptions, leaves as
:class:`RenderError` so a worker can record a "cannot render" note and go on.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, convert_color_space
from pydicom.pixels.utils import as_pixel_options, get_expected_length

from relay.county.render import voi
from relay.county.render.errors import RenderError, RenderFailure

MAX_FRAME_SAMPLES = 1 << 27
"""Cap on Rows x Columns x Samples per Pixel of one frame (134 M, default).

Why: a 1 GiB float frame buffer is the most a render worker should ever allocate;
the largest real single frames (mammography 4096 x 5120, a 10k x 10k RGB scan) fit.
"""

MAX_TOTAL_SAMPLES = 1 << 32
"""Cap on Rows x Columns x Samples per Pixel x Number of Frames (4 Gi samples, default).

Why: beyond it the header is absurd for a transmitted instance (a 2000-frame 1024^2
cine is 2 Gi); rejecting it early keeps nonsense sizes away from the decoders.
"""

THUMBNAIL_SIZE = 128
"""Default thumbnail longest side, pixels."""

THUMBNAIL_QUALITY = 80
"""JPEG quality of thumbnails (default 80): small files for study lists."""

PNG_COMPRESS_LEVEL = 3
"""zlib level for PNG (default 3): nearly the size of level 9 at a fraction of the time."""

_GREY = ("MONOCHROME1", "MONOCHROME2")
_RGB_LIKE = ("RGB", "YBR_ICT", "YBR_RCT")  # J2K decoders undo ICT/RCT and return RGB
_YBR = ("YBR_FULL", "YBR_FULL_422")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Geometry:
    """The size facts of the Image Pixel module, checked against the caps."""

    rows: int
    columns: int
    samples: int
    frames: int


def render_frame(
    data: bytes,
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    size: int | None = None,
) -> Image.Image:
    """Render frame ``frame`` (0-based) of a Part 10 instance to an 8-bit "L" or "RGB" image.

    ``window`` is (center, width) in modality units (HU for CT) and overrides the
    file's VOI; ``size`` fits the longest side to that many pixels.
    """
    return _guarded(lambda: _render(read_dataset(data), frame=frame, window=window, size=size))


def render_png(
    data: bytes,
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    size: int | None = None,
) -> bytes:
    """:func:`render_frame` encoded as PNG (lossless: the screen shows what we computed)."""
    image = render_frame(data, frame=frame, window=window, size=size)
    return _encode(image, "PNG", compress_level=PNG_COMPRESS_LEVEL)


def render_jpeg(
    data: bytes,
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    size: int | None = None,
    quality: int = 90,
) -> bytes:
    """:func:`render_frame` encoded as baseline JPEG at ``quality`` (1-95, default 90)."""
    if not 1 <= quality <= 95:
        raise RenderError(f"JPEG quality must be 1..95, not {quality}", kind=RenderFailure.BAD_REQUEST)
    image = render_frame(data, frame=frame, window=window, size=size)
    return _encode(image, "JPEG", quality=quality)


def thumbnail(data: bytes, *, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG thumbnail of the middle frame (the first for single-frame), file window."""

    def run() -> Image.Image:
        ds = read_dataset(data)
        middle = geometry_of(ds).frames // 2
        return _render(ds, frame=middle, window=None, size=size)

    return _encode(_guarded(run), "JPEG", quality=THUMBNAIL_QUALITY)


def thumbnail_of(image: Image.Image, *, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG thumbnail of an already drawn ``image`` (an ECG's paper), longest side ``size``."""
    return _encode(_fit(image.convert("RGB"), size), "JPEG", quality=THUMBNAIL_QUALITY)


def number_of_frames(data: bytes) -> int:
    """Number of frames of the instance (1 when the attribute is absent)."""
    return _guarded(lambda: geometry_of(read_dataset(data)).frames)


def read_dataset(data: bytes) -> Dataset:
    """Parse Part 10 bytes; anything unreadable is a NOT_DICOM :class:`RenderError`."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise RenderError(f"not a readable DICOM file: {exc}", kind=RenderFailure.NOT_DICOM) from exc
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise RenderError("file meta has no Transfer Syntax UID", kind=RenderFailure.NOT_DICOM)
    return ds


def geometry_of(ds: Dataset) -> Geometry:
    """Read and check Rows, Columns, Samples per Pixel and Number of Frames."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise RenderError("the instance has no pixel data", kind=RenderFailure.NO_PIXEL_DATA)
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RenderError(f"image size attributes missing or invalid: {exc}") from exc
    if min(rows, columns, samples, frames) < 1:
        raise RenderError(f"invalid image size {rows}x{columns}x{samples}, {frames} frames")
    per_frame = rows * columns * samples
    if per_frame > MAX_FRAME_SAMPLES or per_frame * frames > MAX_TOTAL_SAMPLES:
        raise RenderError(
            f"image size {rows}x{columns}x{samples} x {frames} frames is beyond the render caps",
            kind=RenderFailure.TOO_LARGE,
        )
    return Geometry(rows, columns, samples, frames)


def _guarded(run: Callable[[], _T]) -> _T:
    """Run ``run()`` and turn every exception into :class:`RenderError`."""
    try:
        return run()
    except RenderError:
        raise
    except MemoryError as exc:
        raise RenderError("not enough memory to render", kind=RenderFailure.TOO_LARGE) from exc
    except NotImplementedError as exc:
        raise RenderError(f"cannot decode: {exc}", kind=RenderFailure.UNSUPPORTED) from exc
    except Exception as exc:  # pydicom and the codecs raise many kinds; none may escape
        raise RenderError(f"pixel data could not be decoded: {type(exc).__name__}: {exc}") from exc


def _render(ds: Dataset, *, frame: int, window: tuple[float, float] | None, size: int | None) -> Image.Image:
    geometry = geometry_of(ds)
    if not 0 <= frame < geometry.frames:
        raise RenderError(
            f"frame {frame} is out of range: the instance has {geometry.frames} frame(s)",
            kind=RenderFailure.BAD_REQUEST,
        )
    if size is not None and size < 1:
        raise RenderError(f"size must be at least 1 pixel, not {size}", kind=RenderFailure.BAD_REQUEST)
    pixels, photometric = decode_frame(ds, frame)
    if photometric in _GREY:
        image = Image.fromarray(_grey(pixels, ds, window, photometric), mode="L")
    else:
        image = Image.fromarray(_colour(pixels, ds, photometric), mode="RGB")
    return _fit(_square_pixels(image, ds), size)


def decode_frame(ds: Dataset, frame: int) -> tuple[NDArray[Any], str]:
    """Decode one frame; return it with the photometric interpretation it now has.

    The decoder may already have converted YBR to RGB (JPEG baseline usually is); the
    returned name says what the array holds, so colour is never converted twice.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise RenderError(f"unsupported transfer syntax {syntax}", kind=RenderFailure.UNSUPPORTED) from exc
    if not decoder.is_available:
        raise RenderError(
            f"no installed plugin decodes transfer syntax {syntax} ({syntax.name})",
            kind=RenderFailure.UNSUPPORTED,
        )
    if not syntax.is_compressed and "PixelData" in ds:
        _check_native_length(ds)
    options = as_pixel_options(ds)
    options["as_rgb"] = True  # let the decoder convert YBR when it can; ``changes`` tells us if it did
    arr, changes = decoder.as_array(ds, index=frame, validate=True, **options)
    photometric = str(changes.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))
    return arr, photometric.strip().upper()


def _check_native_length(ds: Dataset) -> None:
    expected = get_expected_length(ds, "bytes")
    actual = len(ds.PixelData)
    if actual < expected:
        raise RenderError(
            f"pixel data is truncated: {actual} bytes of the {expected} the header declares",
            kind=RenderFailure.TRUNCATED,
        )


def _grey(
    pixels: NDArray[Any], ds: Dataset, window: tuple[float, float] | None, photometric: str
) -> NDArray[np.uint8]:
    if pixels.ndim != 2:
        raise RenderError(f"grey-scale frame has shape {pixels.shape}", kind=RenderFailure.CORRUPT)
    values = voi.modality(pixels, ds)
    out = voi.to_display(_voi(values, pixels, ds, window))
    return 255 - out if photometric == "MONOCHROME1" else out


def _voi(values: voi.Float, stored: NDArray[Any], ds: Dataset, window: tuple[float, float] | None) -> voi.Float:
    if window is not None:
        chosen = voi.Window(float(window[0]), float(window[1]), voi.function_of(ds))
        if not voi.window_is_valid(chosen):
            raise RenderError(
                f"window width {window[1]} is invalid for {chosen.function}", kind=RenderFailure.BAD_REQUEST
            )
        return voi.apply_window(values, chosen)
    from_file = voi.file_window(ds)
    if from_file is not None:
        return voi.apply_window(values, from_file)
    sequence = ds.get("VOILUTSequence")
    if sequence:
        signed = int(ds.get("PixelRepresentation", 0)) == 1 and "ModalityLUTSequence" not in ds
        return voi.apply_voi_lut(values, sequence[0], signed=signed)
    return voi.apply_window(values, voi.full_range(values, _padding_mask(stored, ds)))


def _padding_mask(stored: NDArray[Any], ds: Dataset) -> NDArray[np.bool_] | None:
    """Pixels holding Pixel Padding Value (or the padding range), excluded from min/max."""
    padding = ds.get("PixelPaddingValue")
    if padding is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    low, high = sorted((int(padding), int(limit if limit is not None else padding)))
    return (stored >= low) & (stored <= high)


def _colour(pixels: NDArray[Any], ds: Dataset, photometric: str) -> NDArray[np.uint8]:
    if photometric == "PALETTE COLOR":
        return _palette(pixels, ds)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise RenderError(f"{photometric} frame has shape {pixels.shape}", kind=RenderFailure.CORRUPT)
    if photometric in _YBR:
        pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
    elif photometric not in _RGB_LIKE:
        raise RenderError(
            f"photometric interpretation {photometric!r} is not supported", kind=RenderFailure.UNSUPPORTED
        )
    bits = int(ds.get("BitsStored", 8) or 8)
    return _scale_to_8_bits(pixels, bits)


def _palette(pixels: NDArray[Any], ds: Dataset) -> NDArray[np.uint8]:
    rgb = apply_color_lut(pixels, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if bits > 8 and int(rgb.max(initial=0)) <= 255:
        bits = 8  # old devices put 8-bit entries in a 16-bit descriptor; scaling would blacken them
    return _scale_to_8_bits(rgb, bits)


def _scale_to_8_bits(arr: NDArray[Any], bits: int) -> NDArray[np.uint8]:
    if bits <= 8:
        small: NDArray[np.uint8] = np.clip(arr, 0, 255).astype(np.uint8)
        return small
    top = float((1 << bits) - 1)
    return voi.to_display(np.clip(arr.astype(np.float64), 0.0, top) * (255.0 / top))


def _square_pixels(image: Image.Image, ds: Dataset) -> Image.Image:
    """Stretch non-square pixels square so anatomy keeps its proportions."""
    ratio = _row_over_column_spacing(ds)
    if ratio is None or abs(ratio - 1.0) < 0.01:
        return image
    width, height = image.size
    if ratio > 1.0:
        return image.resize((width, max(1, round(height * ratio))), Image.Resampling.BILINEAR)
    return image.resize((max(1, round(width / ratio)), height), Image.Resampling.BILINEAR)


def _row_over_column_spacing(ds: Dataset) -> float | None:
    try:
        if "PixelSpacing" in ds and len(ds.PixelSpacing) == 2:
            row, column = (float(v) for v in ds.PixelSpacing)
        elif "PixelAspectRatio" in ds and len(ds.PixelAspectRatio) == 2:
            row, column = (float(v) for v in ds.PixelAspectRatio)
        else:
            return None
    except (TypeError, ValueError):
        return None
    return row / column if row > 0 and column > 0 else None


def _fit(image: Image.Image, size: int | None) -> Image.Image:
    """Scale so the longest side is ``size``: Lanczos when shrinking, bilinear when enlarging."""
    if size is None:
        return image
    width, height = image.size
    scale = size / max(width, height)
    if scale == 1.0:
        return image
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.Resampling.LANCZOS if scale < 1.0 else Image.Resampling.BILINEAR
    return image.resize(target, method)


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@dataclass(frozen=True)
class WindowPreset:
    """A named window for the viewer's preset menu; centre/width in modality units (HU)."""

    key: str
    label_zh: str
    label_en: str
    center: float
    width: float

    def label(self, lang: str = "zh-CN") -> str:
        """The label in ``lang`` (zh-CN by default, anything else English)."""
        return self.label_zh if lang.lower().startswith("zh") else self.label_en


CT_PRESETS: tuple[WindowPreset, ...] = (
    WindowPreset("brain", "脑窗", "Brain", 40.0, 80.0),
    WindowPreset("lung", "肺窗", "Lung", -600.0, 1500.0),
    WindowPreset("mediastinum", "纵隔窗", "Mediastinum", 40.0, 400.0),
    WindowPreset("bone", "骨窗", "Bone", 400.0, 1800.0),
    WindowPreset("abdomen", "腹部", "Abdomen", 40.0, 350.0),
)
"""The CT windows county radiologists use, in HU (centre/width)."""


def window_presets(modality: str) -> tuple[WindowPreset, ...]:
    """Window presets for a modality (CT only; other modalities use the file's window)."""
    return CT_PRESETS if modality.strip().upper() == "CT" else ()

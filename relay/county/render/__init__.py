"""Pure rendering for the county reader: DICOM images to 8-bit PNG/JPEG, ECGs to paper.

No servers, no disk: every function takes the Part 10 bytes of one instance and
raises only :class:`RenderError` (with a :class:`RenderFailure` kind) when it cannot.
"""

from relay.county.render.ecg import (
    EcgMeasurements,
    decode_ecg,
    ecg_measurements,
    ecg_thumbnail,
    paper_header,
    render_ecg_png,
)
from relay.county.render.errors import RenderError, RenderFailure
from relay.county.render.image import (
    WindowPreset,
    render_frame,
    render_jpeg,
    render_png,
    thumbnail,
    window_presets,
)

__all__ = [
    "EcgMeasurements",
    "RenderError",
    "RenderFailure",
    "WindowPreset",
    "decode_ecg",
    "ecg_measurements",
    "ecg_thumbnail",
    "paper_header",
    "render_ecg_png",
    "render_frame",
    "render_jpeg",
    "render_png",
    "thumbnail",
    "window_presets",
]

"""The one error the render package raises, with a closed vocabulary of causes.

A worker that renders a study catches :class:`RenderError`, stores ``kind`` and
``reason`` as the "cannot render" note the reader sees, and moves on: the study
itself is never lost or retried forever because a picture cannot be drawn.
"""

from __future__ import annotations

import enum


class RenderFailure(enum.Enum):
    """Why an instance could not be rendered."""

    NOT_DICOM = "not_dicom"
    """The bytes are not a readable DICOM Part 10 file."""

    NO_PIXEL_DATA = "no_pixel_data"
    """The instance has no pixel data (or, for an ECG, no waveform)."""

    UNSUPPORTED = "unsupported"
    """Transfer syntax, photometric interpretation or encoding we cannot decode."""

    TOO_LARGE = "too_large"
    """The header claims a size beyond the documented caps."""

    TRUNCATED = "truncated"
    """The pixel or waveform data is shorter than the header says."""

    CORRUPT = "corrupt"
    """The data is present but the decoder rejected it, or attributes are invalid."""

    BAD_REQUEST = "bad_request"
    """The caller asked for something impossible (frame out of range, width <= 0)."""

    GAVE_UP = "gave_up"
    """Rendering failed at every attempt up to the cap (a worker died on it, the store kept
    failing) and was dead-lettered; an administrator's retry replaces the note."""


class RenderError(Exception):
    """An instance cannot be rendered; ``reason`` is a sentence fit for the reader's note."""

    def __init__(self, reason: str, *, kind: RenderFailure = RenderFailure.CORRUPT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __repr__(self) -> str:
        return f"RenderError({self.reason!r}, kind={self.kind.value})"

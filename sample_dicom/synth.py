"""Synthetic pixel and waveform content for the sample DICOM files.

Everything here is pure numpy and seeded with the legacy ``RandomState``, whose
streams numpy promises not to change between releases, so the generator writes
the same bytes on every run. Blurs use cumulative sums rather than BLAS-backed
convolutions so that results do not depend on the machine's BLAS build.

The content only has to look plausible in a viewer (a chest, a head, a liver with
a vessel, a sinus rhythm); it is not anatomy and must never be read as such.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Float = NDArray[np.float64]


def _grid(rows: int, cols: int) -> tuple[Float, Float]:
    """Normalised pixel-centre coordinates: x and y both run from -1 to 1."""
    y = (np.arange(rows, dtype=np.float64) + 0.5) / rows * 2.0 - 1.0
    x = (np.arange(cols, dtype=np.float64) + 0.5) / cols * 2.0 - 1.0
    return np.meshgrid(x, y)


def _ellipse(x: Float, y: Float, cx: float, cy: float, rx: float, ry: float) -> Float:
    """Squared normalised radius of an axis-aligned ellipse: < 1 inside."""
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _dome(r2: Float) -> Float:
    """Chord length through an ellipsoid: 0 outside, 1 at the centre."""
    return np.sqrt(np.clip(1.0 - r2, 0.0, None))


def _box_blur_axis(a: Float, radius: int, axis: int) -> Float:
    """Moving average of width 2*radius+1 along one axis, edges clamped."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return (hi - lo) / (2 * radius + 1)


def smooth(a: Float, radius: int) -> Float:
    """Approximate Gaussian blur: three box passes along each image axis."""
    out = a
    for _ in range(3):
        out = _box_blur_axis(_box_blur_axis(out, radius, 0), radius, 1)
    return out


# --- chest radiograph ------------------------------------------------------------


def _ribs(x: Float, y: Float) -> Float:
    """Posterior ribs: thin bands curving down towards the sides, both lungs."""
    bands = np.zeros_like(x)
    for side in (-1.0, 1.0):
        lateral = np.clip(x * side, 0.0, None)
        for k in range(9):
            centre = -0.62 + 0.13 * k + 0.35 * lateral**2
            bands += np.exp(-(((y - centre) / 0.022) ** 2)) * (lateral > 0.04)
    return bands


def _clavicles(x: Float, y: Float) -> Float:
    """Two bright bars across the lung apices."""
    out = np.zeros_like(x)
    for side in (-1.0, 1.0):
        along = x * side
        line = -0.66 - 0.12 * along
        out += np.exp(-(((y - line) / 0.03) ** 2)) * ((along > 0.08) & (along < 0.6))
    return out


def chest_radiograph(rows: int, cols: int, seed: int) -> NDArray[np.uint16]:
    """A PA chest in detector units, 12 bits: high values where more X-rays arrived.

    High stored values (direct exposure, lungs) are what MONOCHROME1 displays dark,
    which is how a DR detector's output is usually sent.
    """
    x, y = _grid(rows, cols)
    shoulders = 0.85 * _dome(_ellipse(x, y, 0.0, -0.5, 0.97, 0.42))
    body = np.maximum(_dome(_ellipse(x, y, 0.0, 0.2, 0.86, 1.15)), shoulders)
    diaphragm = 0.42 - 0.1 * np.cos(np.abs(x) * 5.0)
    lungs = (
        _dome(_ellipse(x, y, -0.38, -0.08, 0.3, 0.58))
        + _dome(_ellipse(x, y, 0.37, -0.06, 0.28, 0.56))
    ) * (y < diaphragm)
    heart = _dome(_ellipse(x, y, 0.15, 0.3, 0.33, 0.25))
    spine = np.exp(-((x / 0.09) ** 4)) * (body > 0)
    mediastinum = np.exp(-((x / 0.16) ** 2)) * (y < 0.2) * (body > 0)
    attenuation = (
        1.0 * body - 0.75 * lungs + 0.55 * heart + 0.5 * spine + 0.25 * mediastinum
        + 0.14 * _ribs(x, y) * (lungs > 0) + 0.3 * _clavicles(x, y) * (body > 0)
    )
    signal = np.exp(-2.4 * smooth(np.clip(attenuation, 0.0, None), 2))
    rng = np.random.RandomState(seed)
    values = 250.0 + 3600.0 * signal + rng.normal(0.0, 18.0, size=signal.shape)
    return np.clip(np.rint(values), 0, 4095).astype(np.uint16)


# --- CT head -----------------------------------------------------------------------


def ct_head_slice(size: int, index: int, seed: int) -> NDArray[np.int16]:
    """One axial head slice in stored values (HU + 1024), slice ``index`` from the base."""
    x, y = _grid(size, size)
    scale = 1.0 - 0.045 * index
    outer = _ellipse(x, y, 0.0, 0.0, 0.74 * scale, 0.88 * scale)
    bone_out = _ellipse(x, y, 0.0, 0.0, 0.70 * scale, 0.84 * scale)
    bone_in = _ellipse(x, y, 0.0, 0.0, 0.64 * scale, 0.78 * scale)
    cortex = _ellipse(x, y, 0.0, 0.0, 0.58 * scale, 0.72 * scale)
    hu = np.full(x.shape, -1000.0)
    hu[outer < 1] = 45.0
    hu[bone_out < 1] = 1150.0
    hu[bone_in < 1] = 38.0
    hu[cortex < 1] = 29.0
    ventricle_ry = 0.12 + 0.05 * min(index, 4 - index)
    for side in (-1.0, 1.0):
        hu[_ellipse(x, y, 0.09 * side, -0.05, 0.06, ventricle_ry) < 1] = 6.0
    hu = smooth(hu, 1)
    rng = np.random.RandomState(seed + index)
    hu += rng.normal(0.0, 4.0, size=hu.shape) * (outer < 1)
    hu[x**2 + y**2 > 1.0] = -1024.0
    return np.rint(hu + 1024.0).astype(np.int16)


# --- MR brain ------------------------------------------------------------------------


def mr_brain_t2(size: int, seed: int) -> NDArray[np.uint16]:
    """An axial T2-weighted-looking brain slice, 12 bits: CSF bright, skull dark."""
    x, y = _grid(size, size)
    scalp = _ellipse(x, y, 0.0, 0.0, 0.76, 0.9)
    skull = _ellipse(x, y, 0.0, 0.0, 0.7, 0.84)
    csf = _ellipse(x, y, 0.0, 0.0, 0.66, 0.8)
    brain = _ellipse(x, y, 0.0, 0.0, 0.62, 0.76)
    white = _ellipse(x, y, 0.0, 0.0, 0.48, 0.6)
    signal = np.zeros(x.shape)
    signal[scalp < 1] = 900.0
    signal[skull < 1] = 80.0
    signal[csf < 1] = 2600.0
    signal[brain < 1] = 1300.0
    signal[white < 1] = 950.0
    for side in (-1.0, 1.0):
        signal[_ellipse(x, y, 0.1 * side, -0.04, 0.07, 0.2) < 1] = 2700.0
    signal[(np.abs(x) < 0.012) & (brain < 1)] = 2500.0  # interhemispheric fissure
    signal = smooth(signal, 1)
    rng = np.random.RandomState(seed)
    noisy = np.hypot(signal + rng.normal(0.0, 25.0, x.shape), rng.normal(0.0, 25.0, x.shape))
    return np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)


# --- colour Doppler ultrasound --------------------------------------------------------


def _sector(rows: int, cols: int) -> tuple[Float, Float]:
    """Depth (pixels) and angle (radians) of each pixel from a probe above the image."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    dx = xx - (cols - 1) / 2.0
    dy = yy + 12.0
    return np.hypot(dx, dy), np.arctan2(dx, dy)


def _colour_bar(frame: NDArray[np.uint8]) -> None:
    """The velocity scale every scanner paints at the side: red above, blue below."""
    rows = frame.shape[0]
    top, bottom = rows // 5, rows - rows // 5
    mid = (top + bottom) // 2
    for r in range(top, bottom):
        level = int(255 * abs(r - mid) / (mid - top))
        frame[r, -8:-4] = (level, level // 4, 0) if r < mid else (0, level // 4, level)


def doppler_cine(frames: int, rows: int, cols: int, seed: int) -> NDArray[np.uint8]:
    """An RGB colour Doppler loop: B-mode liver texture with a pulsing vessel."""
    rng = np.random.RandomState(seed)
    depth, angle = _sector(rows, cols)
    inside = (np.abs(angle) < 0.62) & (depth > 16) & (depth < rows + 6)
    gain = np.clip(1.1 - depth / (1.6 * rows), 0.25, None)
    base = smooth(rng.rayleigh(1.0, size=(rows, cols)), 1)
    vessel_row = rows * 0.55
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    lumen = np.clip(1.0 - ((yy - vessel_row) / 5.0) ** 2, 0.0, None)
    box = (yy >= vessel_row - 14) & (yy <= vessel_row + 14) & (xx >= 50) & (xx <= 112) & inside
    out = np.zeros((frames, rows, cols, 3), dtype=np.uint8)
    for f in range(frames):
        speckle = base * (0.85 + 0.3 * rng.random_sample((rows, cols)))
        grey = np.clip(120.0 * gain * speckle * (1.0 - 0.9 * (lumen > 0)), 0, 255) * inside
        frame = np.repeat(np.rint(grey).astype(np.uint8)[:, :, None], 3, axis=2)
        pulse = 0.35 + 0.65 * max(0.0, float(np.sin(2.0 * np.pi * f / frames)))
        flow = lumen * pulse * box
        coloured = flow > 0.05
        frame[coloured] = np.stack(
            [np.rint(90 + 165 * flow), np.rint(60 * flow**2), np.zeros_like(flow)], axis=-1
        ).astype(np.uint8)[coloured]
        edge = box & ~(np.roll(box, 1, 0) & np.roll(box, -1, 0) & np.roll(box, 1, 1) & np.roll(box, -1, 1))
        frame[edge] = (160, 160, 160)
        _colour_bar(frame)
        out[f] = frame
    return out


# --- 12-lead ECG -----------------------------------------------------------------------

# Each wave: (time from the R peak in s, width in s, dipole in mV as (left, inferior, anterior)).
_WAVES: tuple[tuple[float, float, tuple[float, float, float]], ...] = (
    (-0.17, 0.028, (0.09, 0.12, 0.03)),  # P
    (-0.024, 0.008, (-0.12, 0.02, 0.3)),  # septal: q in I and V6, r in V1
    (-0.007, 0.009, (0.6, 0.5, 0.45)),  # R, early: left and anterior
    (0.008, 0.009, (0.6, 0.55, -0.35)),  # R, late: left and posterior
    (0.026, 0.010, (-0.1, -0.15, -0.35)),  # S
    (0.26, 0.05, (0.2, 0.16, 0.12)),  # T, upstroke
    (0.31, 0.032, (0.12, 0.1, 0.08)),  # T, faster downstroke
)

# Precordial electrodes in the horizontal plane: angle from the patient's left
# towards anterior, and a near-field gain.
_PRECORDIAL: tuple[tuple[float, float], ...] = (
    (115.0, 1.25), (94.0, 1.5), (75.0, 1.6), (60.0, 1.55), (30.0, 1.3), (0.0, 1.05),
)

ECG_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _dipole(t: Float, beats: Float) -> Float:
    """Heart vector (left, inferior, anterior) in mV at times ``t`` for R peaks ``beats``."""
    out = np.zeros((t.size, 3))
    for r_time in beats:
        for offset, width, vector in _WAVES:
            shape = np.exp(-0.5 * ((t - r_time - offset) / width) ** 2)
            out += shape[:, None] * np.asarray(vector)[None, :]
    return out


def twelve_lead_ecg(
    *, sampling_hz: int, seconds: int, heart_rate_bpm: int, uv_per_count: float, seed: int
) -> NDArray[np.int16]:
    """Samples x 12 leads in counts, ordered as ``ECG_LEADS``.

    I and II are synthesised; III, aVR, aVL and aVF are derived from them in counts
    (III = II - I exactly; the augmented leads to within half a count), so the limb
    leads obey Einthoven's and Goldberger's relations as a real cart's do.
    """
    rng = np.random.RandomState(seed)
    n = sampling_hz * seconds
    t = np.arange(n, dtype=np.float64) / sampling_hz
    rr = 60.0 / heart_rate_bpm
    beats = 0.35 + rr * np.arange(int(seconds / rr) + 1) + rng.uniform(-0.008, 0.008, int(seconds / rr) + 1)
    heart = _dipole(t, beats)
    wander = 0.04 * np.sin(2.0 * np.pi * 0.23 * t + 0.7)

    def counts(mv: Float) -> NDArray[np.int64]:
        noisy = mv + rng.normal(0.0, 0.008, n)
        return np.rint(noisy * 1000.0 / uv_per_count).astype(np.int64)

    lead_i = counts(heart[:, 0] + wander)
    lead_ii = counts(0.5 * heart[:, 0] + np.sqrt(3.0) / 2.0 * heart[:, 1] + 1.3 * wander)
    limb = [
        lead_i,
        lead_ii,
        lead_ii - lead_i,
        np.rint(-(lead_i + lead_ii) / 2.0).astype(np.int64),
        np.rint(lead_i - lead_ii / 2.0).astype(np.int64),
        np.rint(lead_ii - lead_i / 2.0).astype(np.int64),
    ]
    chest = []
    for degrees, gain in _PRECORDIAL:
        a = np.deg2rad(degrees)
        chest.append(counts(gain * (np.cos(a) * heart[:, 0] + np.sin(a) * heart[:, 2]) + 0.8 * wander))
    return np.stack(limb + chest, axis=1).astype(np.int16)

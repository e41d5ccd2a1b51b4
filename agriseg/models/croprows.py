"""Crop rows in a vegetation mask: where they run, and which plants stand on them.

Early in the season a row crop stands on regularly spaced, nearly straight rows and
most weeds grow between them, so a window of a few metres of vegetation mask tells
crop from weed without any label (Bah, Hafiane & Canals 2018; Louargant et al. 2018):

1. **Direction and spacing** (:func:`find_rows`): the strongest peak of the power
   spectrum of the (Hann-windowed) mask within a band of periods, refined between the
   FFT's bins by a direct Fourier transform of the vegetation pixels. Its strength,
   the length of that transform's mean phasor, is the window's *regularity*: about
   ``sinc(row width / spacing)`` for clean rows, near 0 for scattered plants.
2. **Centre lines**: the phase of that wave measured per segment along the rows, so
   rows that bend or drift within the window are followed; each pixel gets its
   distance across from the nearest centre line.
3. **Row width**: the vegetation profile across the rows (share of vegetation at each
   distance from a centre line); the crop band is where it stays above a tenth of
   the way from the inter-row floor to the row peak.
4. **Labels** (:func:`label_rows`): vegetation in the band is crop, outside it weed,
   and a patch of vegetation that never reaches a row's core is weed as a whole
   (a weed just touching the band is not crop); with colour features, the patches
   that do reach a row are split by colour at the band's edge. A window without rows
   labels its vegetation *off rows*, never weed.

Everything works in pixels; callers convert to metres with the GSD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Least regularity (see module docstring) for a window to count as having rows:
#: scattered plants measure 0.05-0.25, sown rows 0.35-0.7 (weeds lower it).
MIN_REGULARITY = 0.28
#: Least prominence of the rows' spectral peak over the mean power of the periods
#: searched: scattered plants reach 30-90, rows 150-2000.
MIN_PROMINENCE = 100.0
#: Least extent of the window's valid pixels, in row spacings (as a square's edge):
#: a few plants in a corner can line up by chance.
MIN_PERIODS = 4.0
#: Periods searched, in pixels: at least this many, and at most a third of the window.
MIN_PERIOD_PX = 6.0
#: A longer wave across the strongest one is the rows' when its power is at least this
#: share of the strongest (which is then the plants' spacing along the rows).
ALONG_ROW_PEAK = 0.2
#: Least vegetation share of a window to look for rows in it.
MIN_COVER = 0.01
#: Vegetation pixels the refinement transform samples.
SAMPLE = 6000
#: Length of the segments along the rows whose phase is measured, in row spacings.
SEGMENT_SPACINGS = 2.0
#: Where the crop band ends: this far from the inter-row floor to the row peak.
BAND_LEVEL = 0.1
#: A patch of vegetation is crop only if it reaches within this share of the band's
#: half width of a centre line.
CORE = 0.45


@dataclass(frozen=True)
class WindowRows:
    """The rows of one window (pixel units; ``angle`` in radians, clockwise on screen
    from the window's columns, as image rows run down).

    Attributes:
        found: Whether the window has rows (regular enough; see :data:`MIN_REGULARITY`).
        angle: Row direction: ``u = col cos(angle) + row sin(angle)`` runs along them.
        spacing: Distance between neighbouring centre lines.
        regularity: Length of the mean phasor of the vegetation at the row frequency (0-1).
        half_width: Half width of the crop band around each centre line.
        distance: Per pixel, distance across from the nearest centre line (None when
            not found).
    """

    found: bool
    angle: float = 0.0
    spacing: float = 0.0
    regularity: float = 0.0
    half_width: float = 0.0
    distance: np.ndarray | None = None


def _taper(h: int, w: int) -> np.ndarray:
    """A 2-D Hann window: the window's centre counts most, its edges (at a raster's edge,
    a mirrored copy of the field) least."""
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def _peak(
    mask: np.ndarray, taper: np.ndarray, min_period: float, max_period: float
) -> tuple[float, float, float] | None:
    """Frequency vector (cycles/px: along columns, along rows) of the strongest spectral
    peak of ``mask`` (centred on its mean) with a period in ``[min_period, max_period]``,
    and its prominence (its power over the mean power of those periods)."""
    h, w = mask.shape
    centred = mask * taper
    power = np.abs(np.fft.rfft2(centred)) ** 2
    fy, fx = np.fft.fftfreq(h), np.fft.rfftfreq(w)
    radius = np.hypot(fy[:, None], fx[None, :])
    searched = (radius >= 1 / max_period) & (radius <= 1 / min_period)
    power[~searched] = 0
    if not power.any():
        return None
    mean_power = float(power[searched].mean())
    iy, ix = np.unravel_index(int(np.argmax(power)), power.shape)
    # Plants spaced along a row make a wave too, along the rows, of a shorter period
    # than the rows'; where a longer wave across it is nearly as strong, that is the rows.
    top = power[iy, ix]
    across = np.abs(np.sin(np.arctan2(fy[:, None], fx[None, :]) - math.atan2(fy[iy], fx[ix])))
    rows_like = (across > math.cos(math.radians(20))) & (radius < 0.8 * radius[iy, ix])
    if rows_like.any():
        candidates = np.where(rows_like, power, 0)
        jy, jx = np.unravel_index(int(np.argmax(candidates)), power.shape)
        if candidates[jy, jx] >= ALONG_ROW_PEAK * top:
            iy, ix = jy, jx
    return float(fx[ix]), float(fy[iy]), float(power[iy, ix]) / mean_power


def _refine(
    xs: np.ndarray, ys: np.ndarray, weight: np.ndarray, fx: float, fy: float, step: float
) -> tuple[float, float, float]:
    """The frequency vector near ``(fx, fy)`` maximising the weighted mean phasor of the
    points, and that maximum (a direct transform: finer than the FFT's bins)."""
    freq, phi = math.hypot(fx, fy), math.atan2(fy, fx)
    best = (-1.0, freq, phi)
    step_f, step_phi = step, step / freq
    for _ in range(3):
        for f in freq + np.linspace(-step_f, step_f, 5):
            for p in phi + np.linspace(-step_phi, step_phi, 5):
                phase = -2j * np.pi * f * (xs * math.cos(p) + ys * math.sin(p))
                z = (weight * np.exp(phase)).sum()
                if abs(z) > best[0]:
                    best = (abs(z), f, p)
        _, freq, phi = best
        step_f, step_phi = step_f / 2.5, step_phi / 2.5
    return best[1], best[2], best[0]


def _centre_offsets(u: np.ndarray, v: np.ndarray, spacing: float, length: float) -> np.ndarray:
    """Where the centre lines lie across the rows (``v`` offset, pixels) along ``u``: the
    phase of the vegetation's wave per segment of ``length``, smoothed over neighbouring
    segments and unwrapped. Returns ``(2, n)``: segment centres along ``u``, offsets."""
    seg = np.floor((u - u.min()) / length).astype(np.int64)
    n = int(seg.max()) + 1
    turn = 2 * np.pi * v / spacing
    z = np.bincount(seg, np.cos(turn), n) + 1j * np.bincount(seg, np.sin(turn), n)
    weight = np.abs(z)
    # Neighbouring segments share evidence: a gap in the stand keeps its neighbours' phase.
    zs = z.copy()
    zs[1:] += 0.5 * z[:-1]
    zs[:-1] += 0.5 * z[1:]
    have = weight > 0
    phase = np.angle(zs)
    if have.sum() < n:  # segments without vegetation take the nearest measured phase
        idx = np.flatnonzero(have)
        near = idx[np.clip(np.searchsorted(idx, np.arange(n)), 0, idx.size - 1)]
        phase = phase[near]
    phase = np.unwrap(phase)
    centres = u.min() + (np.arange(n) + 0.5) * length
    return np.stack([centres, phase * spacing / (2 * np.pi)])


def find_rows(
    veg: np.ndarray, valid: np.ndarray | None = None, max_period: float | None = None
) -> WindowRows:
    """The rows of a vegetation mask (True on vegetation) of one window; ``valid``: its
    pixels with data (default all; rows are measured on those alone)."""
    h, w = veg.shape
    valid = np.ones(veg.shape, bool) if valid is None else valid
    n_valid = int(valid.sum())
    veg = veg & valid
    cover = float(veg.sum()) / max(n_valid, 1)
    if cover < MIN_COVER or cover > 0.97 or min(h, w) < 4 * MIN_PERIOD_PX:
        return WindowRows(False)
    max_period = max_period or min(h, w) / 3
    taper = _taper(h, w) * valid
    peak = _peak(veg.astype(np.float32) - np.float32(cover), taper, MIN_PERIOD_PX, max_period)
    if peak is None:
        return WindowRows(False)
    rr, cc = np.nonzero(veg)
    if rr.size > SAMPLE:
        keep = np.random.default_rng(0).choice(rr.size, SAMPLE, replace=False)
        rr, cc = rr[keep], cc[keep]
    fx, fy, prominence = peak
    weight = taper[rr, cc]
    weight /= max(float(weight.sum()), 1e-12)
    xs, ys = cc + 0.5, rr + 0.5
    freq, phi, regularity = _refine(xs, ys, weight, fx, fy, step=1 / max(h, w))
    angle = phi + math.pi / 2  # rows run across their wave vector
    spacing = 1 / freq
    if (
        regularity < MIN_REGULARITY
        or prominence < MIN_PROMINENCE
        or n_valid < (MIN_PERIODS * spacing) ** 2
    ):
        return WindowRows(False, angle, spacing, regularity)
    c, s = math.cos(angle), math.sin(angle)
    cols = np.arange(w, dtype=np.float32)[None, :] + 0.5
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    u = cols * c + rows * s
    v = -cols * s + rows * c
    length = max(SEGMENT_SPACINGS * spacing, 24.0)
    centres, offsets = _centre_offsets(u[veg], v[veg], spacing, length)
    offset = np.interp(u, centres, offsets).astype(np.float32)
    turns = (v - offset) / spacing
    distance = np.abs(turns - np.rint(turns)) * np.float32(spacing)
    half_width = _half_width(veg[valid], distance[valid], spacing)
    return WindowRows(True, angle, spacing, regularity, half_width, distance)


def _half_width(veg: np.ndarray, distance: np.ndarray, spacing: float) -> float:
    """Half width of the crop band: where the vegetation profile across the rows falls to
    a tenth of the way up from the inter-row floor to the row peak (:data:`BAND_LEVEL`)."""
    bins = 25
    at = np.minimum((distance / spacing * 2 * bins).astype(np.int64), bins - 1)
    total = np.bincount(at, minlength=bins)
    on = np.bincount(at, veg, minlength=bins)
    profile = on / np.maximum(total, 1)
    top, floor = float(profile[:3].max()), float(profile[-5:].mean())
    level = floor + BAND_LEVEL * (top - floor)
    below = np.flatnonzero(profile < level)
    edge = int(below[0]) if below.size else bins
    return float(edge) / bins * spacing / 2


def label_rows(
    veg: np.ndarray, rows: WindowRows, features: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop and weed masks of a window's vegetation on found rows (see module docstring).

    With ``features`` (``(F, H, W)``, e.g. chromaticity), the vegetation of the patches
    that reach a row is split by colour as well as by place (Louargant et al. 2018):
    a Gaussian colour model of each class is fitted to the window's sure pixels (crop:
    near the centre lines; weed: patches that never reach a row) and its log-likelihood
    ratio, capped at :data:`COLOUR_WEIGHT`, is added to a prior that runs from crop on
    the centre line to weed beyond the band. A weed grown into the row, or a crop leaf
    beyond the band, takes the class of its colour; the centre of the row stays crop
    (diseased plants, whose colour neither model knows, stand there).
    """
    assert rows.distance is not None
    patches, n = ndimage.label(veg)
    core = veg & (rows.distance < CORE * rows.half_width)
    reaches = np.zeros(n + 1, bool)
    reaches[np.unique(patches[core])] = True
    reaches[0] = False
    attached = reaches[patches]
    crop = attached & (rows.distance < rows.half_width)
    if features is not None:
        weed_sure = veg & ~attached
        crop_sure = core & attached
        if min(int(weed_sure.sum()), int(crop_sure.sum())) >= MIN_COLOUR_SAMPLES:
            llr = _colour_llr(features, weed_sure, crop_sure, attached)
            prior = PRIOR_SLOPE * (rows.distance[attached] / rows.half_width - 1)
            crop[attached] = (prior + np.clip(llr, -COLOUR_WEIGHT, COLOUR_WEIGHT)) < 0
    return crop, veg & ~crop


#: Least sure pixels of each class to fit its colour model.
MIN_COLOUR_SAMPLES = 50
#: Most log-likelihood ratio the colour adds (the prior's slope across the band makes
#: the centre lines' third of it crop whatever the colour).
COLOUR_WEIGHT, PRIOR_SLOPE = 4.0, 6.0


def _gaussian_logpdf(x: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Log density (up to a shared constant) of the points ``x`` (N, F) under a Gaussian
    fitted to ``sample`` (M, F), regularised so that a thin sample stays invertible."""
    mean = sample.mean(axis=0)
    cov = np.cov(sample, rowvar=False) + np.eye(sample.shape[1]) * 1e-5
    inv = np.linalg.inv(cov)
    d = x - mean
    return -0.5 * np.einsum("nf,fg,ng->n", d, inv, d) - 0.5 * np.linalg.slogdet(cov)[1]


def _colour_llr(
    features: np.ndarray, weed: np.ndarray, crop: np.ndarray, where: np.ndarray
) -> np.ndarray:
    """Log-likelihood ratio weed over crop of the pixels ``where``, by colour."""
    x = features[:, where].T.astype(np.float64)
    llr = _gaussian_logpdf(x, features[:, weed].T) - _gaussian_logpdf(x, features[:, crop].T)
    return np.asarray(llr)

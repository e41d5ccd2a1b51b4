"""Crop rows on a class raster: their direction, row spacing and plant spacing.

Row crops are sown on a lattice (:class:`Rows`). :func:`estimate_rows` measures it
from the plant mask of a sample window: the row direction and spacing are the
strongest peak of the mask's power spectrum, refined by a direct Fourier transform of
the mask pixels; the plant spacing is the most prominent peak of the spectrum along
the row direction (of the canopy's outline where the rows close into bands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

#: Share of the rows' centre lines under crop above which the rows count as closed bands.
CLOSED = 0.945


#: Ground ranges searched, in metres: row spacing and plant spacing.
ROW_SPACING_M = (0.2, 1.5)


PLANT_SPACING_M = (0.05, 0.6)


@dataclass(frozen=True)
class Rows:
    """The lattice the plants were sown on, in pixel units of the class raster.

    A pixel centre (col + 0.5, row + 0.5) lies at ``u`` along the rows and ``v`` across
    them: ``u = col cos(a) + row sin(a)``, ``v = -col sin(a) + row cos(a)``. Row ``k``
    runs along ``v = offset + k * row_spacing``.
    """

    angle: float
    row_spacing: float
    plant_spacing: float
    offset: float
    gsd_m: float

    def uv(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return cols * c + rows * s, -cols * s + rows * c

    def colrow(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return u * c - v * s, u * s + v * c

    def summary(self, transform: Affine) -> dict[str, float]:
        """Row direction (degrees anticlockwise from the map's east, 0-180) and spacings (m)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = transform.a * c + transform.b * s, transform.d * c + transform.e * s
        return {
            "direction_deg": round(math.degrees(math.atan2(dy, dx)) % 180.0, 2),
            "row_spacing_m": round(self.row_spacing * self.gsd_m, 4),
            "plant_spacing_m": round(self.plant_spacing * self.gsd_m, 4),
        }


def _spectrum_peak(
    power: np.ndarray, fy: np.ndarray, fx: np.ndarray, band: tuple[float, float]
) -> tuple[float, float]:
    """Frequency vector (cycles/px) of the strongest ``power`` within a band of periods."""
    radius = np.hypot(fy[:, None], fx[None, :])
    power = np.where((radius >= 1 / band[1]) & (radius <= 1 / band[0]), power, 0)
    iy, ix = np.unravel_index(int(np.argmax(power)), power.shape)
    return float(fy[iy]), float(fx[ix])


def _along_rows(mask: np.ndarray, angle: float, freqs: np.ndarray) -> np.ndarray:
    """Power of ``mask`` at ``freqs`` (cycles/px) along direction ``angle``, relative to
    the mean power of the frequencies around each."""
    h, w = mask.shape
    centred = mask.astype(np.float32) - np.float32(mask.mean())
    power = ndimage.gaussian_filter(np.fft.fftshift(np.abs(np.fft.fft2(centred)) ** 2), 1.0)
    coords = [freqs * math.sin(angle) * h + h // 2, freqs * math.cos(angle) * w + w // 2]
    profile = ndimage.map_coordinates(power, coords, order=1)
    return profile / ndimage.uniform_filter1d(profile, freqs.size // 4, mode="nearest")


def _closed(
    mask: np.ndarray, angle: float, row_spacing: float, offset: float, origin: tuple[int, int]
) -> bool:
    """Whether the plants of the rows close into bands: crop covers nearly all of the
    rows' centre lines (``offset``: in row spacings; ``origin``: the mask's column and
    row in the raster)."""
    h, w = mask.shape
    rr, cc = np.mgrid[0:h, 0:w]
    cols, rows = cc + origin[0] + 0.5, rr + origin[1] + 0.5
    v = -cols * math.sin(angle) + rows * math.cos(angle)
    turns = (v / row_spacing - offset) % 1.0
    centre = np.minimum(turns, 1 - turns) < 0.05
    return float(mask[centre].mean()) > CLOSED


def estimate_rows(mask: np.ndarray, gsd_m: float, window: Window | None = None) -> Rows | None:
    """The row lattice of a plant mask (True on plant pixels) read in ``window`` of the
    raster (default: at its origin); None with too few rows in it."""
    h, w = mask.shape
    if mask.sum() < 100:
        return None
    rows_px = (ROW_SPACING_M[0] / gsd_m, ROW_SPACING_M[1] / gsd_m)
    if max(h, w) < 2 * rows_px[0]:
        return None
    centred = mask.astype(np.float32) - np.float32(mask.mean())
    power = np.abs(np.fft.rfft2(centred)) ** 2
    fy, fx = np.fft.fftfreq(h), np.fft.rfftfreq(w)
    vy, vx = _spectrum_peak(power, fy, fx, rows_px)
    # Refine the peak between the FFT's bins: the direct transform of the plant pixels.
    rr, cc = np.nonzero(mask)
    if rr.size > 100_000:
        keep = np.random.default_rng(0).choice(rr.size, 100_000, replace=False)
        rr, cc = rr[keep], cc[keep]
    col_off, row_off = (window.col_off, window.row_off) if window is not None else (0, 0)
    xs, ys = cc + col_off + 0.5, rr + row_off + 0.5
    freq, phi = math.hypot(vx, vy), math.atan2(vy, vx)
    step_f = 1 / max(h, w)
    step_phi = step_f / freq
    best = (-1.0, freq, phi)
    for _ in range(4):
        for f in freq + np.linspace(-step_f, step_f, 9):
            for p in phi + np.linspace(-step_phi, step_phi, 9):
                value = abs(np.exp(-2j * np.pi * f * (xs * math.cos(p) + ys * math.sin(p))).mean())
                if value > best[0]:
                    best = (value, f, p)
        _, freq, phi = best
        step_f, step_phi = step_f / 4, step_phi / 4
    angle = phi + math.pi / 2  # rows run across their wave vector
    row_spacing = 1 / freq
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    offset = float(np.angle(np.exp(2j * np.pi * v / row_spacing).sum())) / (2 * np.pi)
    # Plant spacing: the most prominent period along the rows, judged against the mean
    # power around it (power falls with the frequency: the canopy's patches, gaps, foci).
    lo, hi = (m / gsd_m for m in PLANT_SPACING_M)
    freqs = np.linspace(1 / min(hi, max(h, w) / 3), 1 / max(lo, 2.5), 2000)
    plant_spacing = 1 / float(freqs[int(np.argmax(_along_rows(mask, angle, freqs)))])
    # Where the plants of a row close into one band the mask hardly varies along it, but
    # its outline still does (leaves and the notches between them): then the outline's
    # period near the mask's is the plant spacing.
    if _closed(mask, angle, row_spacing, offset, (col_off, row_off)):
        outline = mask & ~ndimage.binary_erosion(mask)
        near = np.abs(freqs * plant_spacing - 1) < 0.12
        profile = np.where(near, _along_rows(outline, angle, freqs), 0)
        plant_spacing = 1 / float(freqs[int(np.argmax(profile))])
    return Rows(float(angle), float(row_spacing), plant_spacing, float(offset * row_spacing), gsd_m)

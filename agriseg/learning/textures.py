"""Procedural textures for generated surveys: value noise, fractal noise, plane waves, blur.

Pure numpy functions of a random generator, drawn in ground units (metres) so that
features keep their real size whatever the ground sampling distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def value_noise(
    rng: np.random.Generator, shape: tuple[int, int], gsd: float, cell_m: float
) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``cell_m`` metres across."""
    h, w = shape
    cell_px = max(cell_m / gsd, 1.0)
    grid = rng.uniform(-1, 1, (int(h / cell_px) + 3, int(w / cell_px) + 3)).astype(np.float32)

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / cell_px + rng.uniform(0, 1)
        i0 = pos.astype(np.int64)
        return i0, _smoothstep(pos - i0).astype(np.float32)

    r0, rw = axis(h)
    c0, cw = axis(w)
    rows = grid[r0] * (1 - rw)[:, None] + grid[r0 + 1] * rw[:, None]
    return rows[:, c0] * (1 - cw) + rows[:, c0 + 1] * cw


def fbm(
    rng: np.random.Generator, shape: tuple[int, int], gsd: float, cells_m: tuple[float, ...]
) -> np.ndarray:
    """Sum of value-noise octaves, roughly in [-1, 1]; octaves finer than a pixel are white."""
    out = np.zeros(shape, np.float32)
    total = 0.0
    for i, cell in enumerate(cells_m):
        weight = 0.6**i
        if cell < 1.5 * gsd:
            out += weight * rng.uniform(-1, 1, shape).astype(np.float32)
        else:
            out += weight * value_noise(rng, shape, gsd, cell)
        total += weight
    return out / total


def wave_field(
    rng: np.random.Generator, wavelengths: tuple[float, float]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A smooth field in [-1, 1] to evaluate at any points: a mean of four random plane waves."""
    waves = []
    for _ in range(4):
        angle = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / rng.uniform(*wavelengths)
        waves.append((angle, k, rng.uniform(0, 6.3)))

    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(x, y).shape, np.float32)
        for angle, k, phase in waves:
            out += np.sin(k * (math.cos(angle) * x + math.sin(angle) * y) + phase)
        return out / 4

    return field


def waves(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, wavelengths: tuple[float, float]
) -> np.ndarray:
    """Smooth field in [-1, 1] at arbitrary points: a mean of four random plane waves."""
    return wave_field(rng, wavelengths)(x, y)


def gaussian_blur(bands: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(bands, H, W)`` with edge padding."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    out = bands
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, t in enumerate(taps):
            acc += t * padded.take(np.arange(i, i + n), axis=axis)
        out = acc
    return out


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) pixels, False where it moved in from outside."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out

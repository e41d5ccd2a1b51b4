"""Plant counts: crop plants, plants per m² and missing plants along the rows of a finished run.

Row crops are sown on a lattice: rows ``row_spacing`` apart, plants ``plant_spacing``
apart along each row. Neighbouring plants overlap into a continuous band of canopy, so
splitting the band by its shape (distance transform, watershed) merges plants; the
lattice instead is measured from the class raster and each of its slots is asked
whether it holds a plant:

1. **Rows** (:func:`estimate_rows`): the row direction and spacing are the strongest
   peak of the power spectrum of the plant mask (classes with role ``crop`` or
   ``disease``) of a sample window, refined by a direct Fourier transform of the mask
   pixels; the plant spacing is the most prominent peak of the spectrum along the row
   direction (of the canopy's outline where the rows close into bands).
2. **Phase of each row segment** (:func:`row_phases`): where along the row its slots
   lie, from the segment's Fourier coefficient at the plant spacing, summed over the
   windows of the whole raster (so every window agrees on it).
3. **Slots** (:func:`count_plants`): each window, read with a halo, cuts its pixels
   into slot cells (one plant spacing by one row spacing); a slot holds a plant when
   plant pixels cover more than :data:`OCCUPIED` of its core. A plant's point is the
   centroid of the plant pixels of its cell, its area their area, and it belongs to
   the window holding its slot's centre, so no plant is counted twice. An empty slot
   with plants on both sides within :data:`GAP_REACH` slots is a *missing plant*.

Diseased crop plants are plants: they stand in the row and count towards the stand;
each plant's ``class`` is the class of most of its pixels.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from agriseg.classes import NODATA, ClassList
from agriseg.errors import InputError
from agriseg.health.health_stats import ZoneLabeller, raster_crs
from agriseg.health.vectorize import blocks
from agriseg.health.zones import field_labeller, grid_labeller, make_grid, read_fields
from agriseg.io.areas import pixel_size_m
from agriseg.io.atomic import OutputTransaction, output_transaction
from agriseg.io.geopackage import write_layer
from agriseg.io.ownership import PLANT_KINDS, check_free, output_paths, record_outputs
from agriseg.io.raster import GEOREFERENCE_FIX

#: Share of a slot's core that plant pixels must cover for the slot to hold a plant.
OCCUPIED = 0.75
#: Half extent of a slot's core: along the row, in plant spacings; across, in row spacings.
CORE_ALONG, CORE_ACROSS = 0.3, 0.1
#: Pixels of a row that feed its phase: within this many row spacings of its centre line.
PHASE_BAND = 0.3
#: An empty slot is a missing plant when plants stand within this many slots on both sides.
GAP_REACH = 3
#: Share of the rows' centre lines under crop above which the rows count as closed bands.
CLOSED = 0.945
#: Length of the row segments whose slots are placed together, in plant spacings.
SEGMENT = 32
#: Ground ranges searched, in metres: row spacing and plant spacing.
ROW_SPACING_M = (0.2, 1.5)
PLANT_SPACING_M = (0.05, 0.6)
#: Edge of the sample windows the row geometry is measured on (the one with most crop), px.
SAMPLE_PX = 1024


@dataclass(frozen=True)
class PlantOptions:
    """What :func:`count_run` does besides counting.

    Attributes:
        fields: Field-boundary polygons: plants and plants per m² per field.
        grid_m: Management-zone cell size in metres: plants per m² per cell.
        window_px: Edge of the windows the class raster is read in (plus a halo).
    """

    fields: Path | None = None
    grid_m: float | None = None
    window_px: int = 1024

    def __post_init__(self) -> None:
        if self.grid_m is not None and not self.grid_m > 0:
            raise InputError(f"--grid {self.grid_m}: expected a cell size > 0 m")
        if self.window_px < 64:
            raise InputError(f"window of {self.window_px} px: expected at least 64 px")


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


@dataclass(frozen=True)
class PlantCount:
    """Plants of one class raster.

    Attributes:
        plants: Points: ``plant_id``, ``area_m2`` (its pixels in its slot's cell),
            ``diseased`` (most of them of a ``disease`` class), with fields
            ``field_id`` and with a grid ``zone_id`` (None outside them).
        missing: Points of the missing plants (empty slots between plants of a row).
        rows: The row lattice, or None where there was no crop to find rows in.
        area_m2: Valid ground area.
        fields: Per field: ``field_id``, ``plants``, ``area_m2``, ``plants_per_m2``.
        zones: Per grid cell holding valid pixels: ``zone_id``, ``row``, ``col``,
            ``plants``, ``area_m2``, ``plants_per_m2``.
    """

    plants: gpd.GeoDataFrame
    missing: gpd.GeoDataFrame
    rows: Rows | None
    area_m2: float
    fields: list[dict[str, Any]]
    zones: list[dict[str, Any]]

    def summary(self, transform: Affine) -> dict[str, Any]:
        n = len(self.plants)
        return {
            "plants": n,
            "area_m2": round(self.area_m2, 3),
            "plants_per_m2": round(n / self.area_m2, 3) if self.area_m2 else None,
            "missing_plants": len(self.missing),
            "mean_plant_area_m2": round(float(self.plants["area_m2"].mean()), 5) if n else None,
            "rows": self.rows.summary(transform) if self.rows else None,
            "fields": self.fields,
            "zones": self.zones,
        }


def plant_class_ids(classes: ClassList, path: Path) -> np.ndarray:
    """Ids of the classes that are crop plants (role ``crop`` or ``disease``)."""
    ids = classes.ids_with_role("crop") + classes.ids_with_role("disease")
    if not ids:
        raise InputError(
            f"{path}: none of its classes ({', '.join(classes.names)}) has the role crop or "
            "disease, so there are no plants to count; run a model with a crop class"
        )
    return np.array(sorted(ids), np.uint8)


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


def _windows(height: int, width: int, size: int) -> Iterator[Window]:
    """The raster's ``size`` px windows, row by row (:func:`~agriseg.health.vectorize.blocks`)."""
    return itertools.chain.from_iterable(blocks(height, width, size))


def _grown(window: Window, halo: int, height: int, width: int) -> Window:
    col0, row0 = max(int(window.col_off) - halo, 0), max(int(window.row_off) - halo, 0)
    col1 = min(int(window.col_off + window.width) + halo, width)
    row1 = min(int(window.row_off + window.height) + halo, height)
    return Window(col0, row0, col1 - col0, row1 - row0)


def _pixel_uv(rows: Rows, window: Window) -> tuple[np.ndarray, np.ndarray]:
    cols = np.arange(int(window.width), dtype=np.float64) + window.col_off + 0.5
    rws = np.arange(int(window.height), dtype=np.float64) + window.row_off + 0.5
    return rows.uv(cols[None, :], rws[:, None])


def _segment_key(k: np.ndarray, seg: np.ndarray) -> np.ndarray:
    return (k.astype(np.int64) << 32) + (seg.astype(np.int64) + (1 << 31))


@dataclass(frozen=True)
class Phases:
    """Where the slots of each row segment lie.

    A row is cut along ``u`` into segments of :data:`SEGMENT` plant spacings (the same
    for every window); segment ``seg`` of row ``k`` owns the slots at
    ``u = seg * SEGMENT * plant_spacing + phase + j * plant_spacing``, ``j`` in
    ``0 .. SEGMENT - 1``, ``0 <= phase < plant_spacing``. Measuring the phase per
    segment follows sowing that drifts along a long row.
    """

    keys: np.ndarray
    phase: np.ndarray

    def lookup(self, k: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Phase of each (row, segment); NaN for segments without plants."""
        key = _segment_key(k, seg)
        at = np.clip(np.searchsorted(self.keys, key), 0, max(self.keys.size - 1, 0))
        if self.keys.size == 0:
            return np.full(key.shape, np.nan)
        return np.where(self.keys[at] == key, self.phase[at], np.nan)


def _segments(rows: Rows, u: np.ndarray) -> np.ndarray:
    return np.floor(u / (SEGMENT * rows.plant_spacing)).astype(np.int64)


def _row_sums(
    rows: Rows, u: np.ndarray, v: np.ndarray, plant: np.ndarray, whole_rows: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of the (row, segment) pairs and the sum of ``exp(2 pi i u' / plant_spacing)``
    over the plant pixels near each row's centre line (``u'``: from the segment's start;
    ``whole_rows``: one segment per row)."""
    spacing = rows.plant_spacing
    kf = (v - rows.offset) / rows.row_spacing
    k = np.rint(kf).astype(np.int64)
    near = plant & (np.abs(kf - k) < PHASE_BAND)
    seg = np.zeros(int(near.sum()), np.int64) if whole_rows else _segments(rows, u[near])
    turn = 2 * np.pi * (u[near] - seg * SEGMENT * rows.plant_spacing) / spacing
    keys, inverse = np.unique(_segment_key(k[near], seg), return_inverse=True)
    z = np.bincount(inverse, weights=np.cos(turn), minlength=keys.size) + 1j * np.bincount(
        inverse, weights=np.sin(turn), minlength=keys.size
    )
    return keys, z


def row_phases(src: rasterio.DatasetReader, ids: np.ndarray, rows: Rows, size: int) -> Phases:
    """Where the slots of every row segment lie, from the plant pixels of all windows."""
    sums: dict[int, complex] = {}
    for window in _windows(src.height, src.width, size):
        u, v = _pixel_uv(rows, window)
        plant = np.isin(src.read(1, window=window), ids)
        keys, z = _row_sums(rows, u, v, plant)
        for key, value in zip(keys.tolist(), z.tolist(), strict=True):
            sums[key] = sums.get(key, 0j) + value
    keys = np.array(sorted(sums), np.int64)
    turns = np.array([np.angle(sums[k]) for k in keys.tolist()], np.float64) / (2 * np.pi)
    return Phases(keys, np.mod(turns, 1.0) * rows.plant_spacing)


@dataclass
class _ZoneTally:
    """Valid pixels and plants per zone (field or grid cell), and each plant's zone."""

    label: ZoneLabeller
    valid_px: np.ndarray
    plants: np.ndarray
    of_plant: list[np.ndarray] = field(default_factory=list)

    def add(
        self, core: Window, valid: np.ndarray, plant_rows: np.ndarray, plant_cols: np.ndarray
    ) -> None:
        zone = self.label(core)
        self.valid_px += np.bincount(zone[valid & (zone >= 0)], minlength=self.valid_px.size)
        at = zone[plant_rows, plant_cols]
        self.plants += np.bincount(at[at >= 0], minlength=self.plants.size)
        self.of_plant.append(at)

    def table(self, keys: Sequence[dict[str, Any]], pixel_m2: float) -> list[dict[str, Any]]:
        """Plants, valid area and plants per m² of the zones holding valid pixels."""
        out = []
        for i in np.flatnonzero(self.valid_px).tolist():
            area = float(self.valid_px[i]) * pixel_m2
            n = int(self.plants[i])
            out.append(
                {
                    **keys[i],
                    "plants": n,
                    "area_m2": round(area, 3),
                    "plants_per_m2": round(n / area, 3),
                }
            )
        return out


def _count_window(
    classes: np.ndarray,
    window: Window,
    core: Window,
    ids: np.ndarray,
    disease_ids: np.ndarray,
    rows: Rows,
    phases: Phases,
) -> tuple[np.ndarray, np.ndarray]:
    """Plants and missing plants whose slot centre lies in ``core``.

    Returns:
        Plants as rows ``(col, row, plant pixels, diseased pixels)`` (pixel coordinates of
        the whole raster) and missing plants as rows ``(col, row)``.
    """
    valid = classes != NODATA
    plant = np.isin(classes, ids)
    u, v = _pixel_uv(rows, window)
    kf = (v - rows.offset) / rows.row_spacing
    k = np.rint(kf).astype(np.int64)
    across = (kf - k) * rows.row_spacing
    seg = _segments(rows, u)
    phase = phases.lookup(k, seg)
    jf = (u - seg * SEGMENT * rows.plant_spacing - phase) / rows.plant_spacing
    # Pixels of a slot owned by the neighbouring segment (j = -1 or SEGMENT) are left to it.
    on_row = np.isfinite(jf)
    j = np.rint(np.where(on_row, jf, -1)).astype(np.int64)
    on_row &= (j >= 0) & (j < SEGMENT)
    if not on_row.any():
        return np.zeros((0, 4)), np.zeros((0, 2))
    along = (jf - j) * rows.plant_spacing
    t = seg * SEGMENT + j  # the slot's place along its row
    k0, t0 = int(k[on_row].min()), int(t[on_row].min()) - GAP_REACH
    n_t = int(t[on_row].max()) - t0 + 1 + GAP_REACH
    n_k = int(k[on_row].max()) - k0 + 1
    cell = np.where(on_row, (k - k0) * n_t + (t - t0), 0)
    n = n_k * n_t
    in_core = (
        on_row
        & valid
        & (np.abs(along) < CORE_ALONG * rows.plant_spacing)
        & (np.abs(across) < CORE_ACROSS * rows.row_spacing)
    )
    core_px = np.bincount(cell[in_core], minlength=n)
    core_plant = np.bincount(cell[in_core & plant], minlength=n)
    expected = (2 * CORE_ALONG * rows.plant_spacing) * (2 * CORE_ACROSS * rows.row_spacing)
    # A slot whose core is mostly outside the raster or nodata is not judged.
    judged = core_px >= 0.5 * expected
    occupied = judged & (core_plant > OCCUPIED * np.maximum(core_px, 1))
    mine = on_row & plant
    cells = cell[mine]
    area = np.bincount(cells, minlength=n)
    sick = np.bincount(cells[np.isin(classes[mine], disease_ids)], minlength=n)
    rr, cc = np.nonzero(mine)
    sum_c = np.bincount(cells, weights=cc + window.col_off + 0.5, minlength=n)
    sum_r = np.bincount(cells, weights=rr + window.row_off + 0.5, minlength=n)
    # Slot centres, in raster pixel coordinates.
    kk, tt = np.divmod(np.arange(n), n_t)
    kk, tt = kk + k0, tt + t0
    seg_t, j_t = np.divmod(tt, SEGMENT)
    slot_u = (
        seg_t * SEGMENT * rows.plant_spacing + phases.lookup(kk, seg_t) + j_t * rows.plant_spacing
    )
    slot_c, slot_r = rows.colrow(slot_u, rows.offset + kk * rows.row_spacing)
    holds = (
        (slot_c >= core.col_off)
        & (slot_c < core.col_off + core.width)
        & (slot_r >= core.row_off)
        & (slot_r < core.row_off + core.height)
    )
    found = np.flatnonzero(holds & occupied)
    safe = np.maximum(area[found], 1)
    plants = np.column_stack([sum_c[found] / safe, sum_r[found] / safe, area[found], sick[found]])
    grid = occupied.reshape(n_k, n_t)
    before = np.zeros_like(grid)
    after = np.zeros_like(grid)
    for d in range(1, GAP_REACH + 1):
        before[:, d:] |= grid[:, :-d]
        after[:, :-d] |= grid[:, d:]
    gap = judged & ~occupied & holds & (before & after).ravel()
    missing = np.column_stack([slot_c[gap], slot_r[gap]])
    return plants, missing


def _sample_window(height: int, width: int) -> list[Window]:
    """Candidate windows to measure the rows on: the centre and the quarters' centres."""
    h, w = min(SAMPLE_PX, height), min(SAMPLE_PX, width)
    centres = [(0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    return [
        Window(
            min(max(round(fx * width - w / 2), 0), width - w),
            min(max(round(fy * height - h / 2), 0), height - h),
            w,
            h,
        )
        for fy, fx in centres
    ]


def count_plants(
    classes_path: Path, options: PlantOptions = PlantOptions(), gsd_m: float | None = None
) -> PlantCount:
    """Count the crop plants of a class raster, in windows with a halo.

    Args:
        classes_path: Class raster (``<stem>.classes.tif`` of a run, or any raster of
            class ids with ``class_N`` tags; the shipped models' classes otherwise).
        options: Fields, zone grid, window size.
        gsd_m: Ground sampling distance; default: from the raster's georeferencing.

    Returns:
        The plants, missing plants, row lattice and densities.

    Raises:
        InputError: The raster has no CRS or no crop class, or the fields are unreadable.
    """
    with rasterio.open(classes_path) as src:
        crs = raster_crs(src, classes_path)
        classes = ClassList.of_class_raster(src)
        ids = plant_class_ids(classes, classes_path)
        disease_ids = np.array(classes.ids_with_role("disease"), np.uint8)
        height, width, transform = src.height, src.width, src.transform
        gsd = gsd_m or pixel_size_m(crs, transform, width, height)
        # The rows are measured where the crop is densest of a few sample windows.
        samples = [(w, np.isin(src.read(1, window=w), ids)) for w in _sample_window(height, width)]
        sample, mask = max(samples, key=lambda wm: int(wm[1].sum()))
        rows = estimate_rows(mask, gsd, sample)
        zones: dict[str, _ZoneTally] = {}
        keys: dict[str, list[dict[str, Any]]] = {}
        if options.fields:
            fields = read_fields(options.fields, crs)
            n = len(fields.ids)
            zones["field_id"] = _ZoneTally(
                field_labeller(fields, transform), np.zeros(n, np.int64), np.zeros(n, np.int64)
            )
            keys["field_id"] = [{"field_id": i} for i in fields.ids]
        if options.grid_m:
            grid = make_grid(crs, transform, width, height, options.grid_m)
            n = grid.n_cells
            zones["zone_id"] = _ZoneTally(
                grid_labeller(grid, crs, transform), np.zeros(n, np.int64), np.zeros(n, np.int64)
            )
            keys["zone_id"] = [
                {"zone_id": i, "row": i // grid.n_cols, "col": i % grid.n_cols} for i in range(n)
            ]
        phases = row_phases(src, ids, rows, options.window_px) if rows else None
        # The halo holds a slot's whole cell and the slots a missing plant looks along.
        halo = (
            0
            if rows is None
            else math.ceil((GAP_REACH + 1) * rows.plant_spacing + rows.row_spacing)
        )
        found, missing, valid_px = [], [], 0
        for core in _windows(height, width, options.window_px):
            valid = src.read(1, window=core) != NODATA
            valid_px += int(valid.sum())
            plants, gaps = np.zeros((0, 4)), np.zeros((0, 2))
            if rows is not None and phases is not None:
                window = _grown(core, halo + 2, height, width)
                plants, gaps = _count_window(
                    src.read(1, window=window), window, core, ids, disease_ids, rows, phases
                )
            found.append(plants)
            missing.append(gaps)
            r = np.clip((plants[:, 1] - core.row_off).astype(np.int64), 0, int(core.height) - 1)
            c = np.clip((plants[:, 0] - core.col_off).astype(np.int64), 0, int(core.width) - 1)
            for tally in zones.values():
                tally.add(core, valid, r, c)
    pixel_m2 = gsd * gsd
    every = np.concatenate(found)
    x, y = transform * (every[:, 0], every[:, 1])
    points = gpd.GeoDataFrame(
        {
            "plant_id": np.arange(len(every), dtype=np.int64),
            "area_m2": every[:, 2] * pixel_m2,
            "diseased": every[:, 3] * 2 > every[:, 2],
        },
        geometry=gpd.points_from_xy(x, y),
        crs=crs,
    )
    for column, tally in zones.items():
        at = np.concatenate(tally.of_plant)
        named = pd.array([k[column] for k in keys[column]] + [None])  # last: at == -1
        points.insert(len(points.columns) - 1, column, named[at])
    gaps = np.concatenate(missing)
    gx, gy = transform * (gaps[:, 0], gaps[:, 1])
    missing_points = gpd.GeoDataFrame(
        {"missing_id": np.arange(len(gaps), dtype=np.int64)},
        geometry=gpd.points_from_xy(gx, gy),
        crs=crs,
    )
    return PlantCount(
        points,
        missing_points,
        rows,
        valid_px * pixel_m2,
        zones["field_id"].table(keys["field_id"], pixel_m2) if "field_id" in zones else [],
        zones["zone_id"].table(keys["zone_id"], pixel_m2) if "zone_id" in zones else [],
    )


@dataclass(frozen=True)
class PlantResult:
    """What :func:`count_run` wrote for one run."""

    stem: str
    count: PlantCount
    gpkg: Path
    json: Path


def write_plants(
    count: PlantCount,
    transform: Affine,
    gpkg: Path,
    summary: Path,
    transaction: OutputTransaction | None = None,
    reliability: dict[str, Any] | None = None,
    stamp: Callable[[Path], None] | None = None,
) -> None:
    """Write the ``plants`` and ``missing_plants`` point layers and the JSON summary
    (with the run's ``reliability`` record, see :mod:`agriseg.field.trust`), staged in
    ``transaction`` (both appear together), or each file atomically; ``stamp`` adds to
    the GeoPackage before it appears."""
    with contextlib.ExitStack() as stack:
        if transaction is None:
            transaction = stack.enter_context(output_transaction())
        staged = transaction.stage(gpkg)
        # GDAL wants the GeoPackage's extension on the file it writes.
        work = staged.with_name(staged.name + gpkg.suffix)
        transaction.adopt(work, gpkg)
        write_layer(count.plants, work, "plants")
        write_layer(count.missing, work, "missing_plants")
        if stamp is not None:
            stamp(work)
        data = count.summary(transform)
        if reliability is not None:
            data = {"reliability": reliability, **data}
        transaction.stage(summary).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def count_run(
    run_dir: Path,
    options: PlantOptions = PlantOptions(),
    stems: Sequence[str] | None = None,
    force: bool = False,
) -> list[PlantResult]:
    """Count the plants of every run in ``run_dir`` (a run's or a batch's ``--out``; or
    those of ``stems``) and write ``<stem>.plants.gpkg`` and ``<stem>.plants.json``
    beside each run's outputs, listed in its summary.

    A file of either name that the run's summary does not list (e.g. the generator's
    truth ``<stem>.plants.gpkg`` in the input's folder) is never replaced: the count
    is refused before anything is written (see :mod:`agriseg.io.ownership`). So is an
    ``unreliable`` map, or rows or plants closer than the imagery resolves, unless
    ``force`` (recorded in ``plants.json`` under ``reliability``; see
    :mod:`agriseg.field.trust`).
    """
    from agriseg.field.prescriptions import find_runs
    from agriseg.field.trust import admit, check_resolved, stamp_for

    runs = [r for r in find_runs(run_dir) if stems is None or r.stem in stems]
    for run in runs:
        if run.summary.get("input", {"crs": ""}).get("crs") is None:
            raise InputError(
                f"{run.summary_path}: the run was on a plain image's pixel grid (no CRS), so "
                f"plants cannot be spaced in metres or placed on a map; {GEOREFERENCE_FIX}"
            )
        inputs = [options.fields] if options.fields else []
        check_free(run.run_dir, run.stem, PLANT_KINDS, inputs)
    records = admit(runs, "count plants", force)
    counted = []
    for run in runs:
        classes_path = run.run_dir / f"{run.stem}.classes.tif"
        if not classes_path.is_file():
            raise InputError(
                f"{classes_path}: missing, so there is nothing to count; rerun agriseg run"
            )
        gsd = (run.summary.get("scale") or {}).get("input_gsd_m")
        count = count_plants(classes_path, options, gsd_m=gsd)
        if count.rows is not None:
            records[run.stem]["spacing"] = check_resolved(
                classes_path, count.rows.row_spacing, count.rows.plant_spacing, force
            )
        counted.append((run, count))
    results = []
    for run, count in counted:
        with rasterio.open(run.run_dir / f"{run.stem}.classes.tif") as src:
            transform = src.transform
        paths = output_paths(run.run_dir, run.stem, PLANT_KINDS)
        gpkg, summary = paths["plants_gpkg"], paths["plants_json"]
        record = records[run.stem]
        with output_transaction() as transaction:
            write_plants(
                count, transform, gpkg, summary, transaction, record, stamp_for(run, record)
            )
            record_outputs(transaction, run.run_dir, run.stem, paths.values())
        results.append(PlantResult(run.stem, count, gpkg, summary))
    return results

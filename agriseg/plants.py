"""Plant counts: crop plants, plants per m² and missing plants along the rows of a finished run.

Row crops are sown on a lattice: rows ``row_spacing`` apart, plants ``plant_spacing``
apart along each row. Neighbouring plants overlap into a continuous band of canopy, so
splitting the band by its shape (distance transform, watershed) merges plants; the
lattice instead is measured from the class raster and each of its slots is asked
whether it holds a plant:

1. **Rows** (:func:`estimate_rows`): the row direction and spacing are the strongest
   peak of the power spectrum of the plant mask (classes with role ``crop`` or
   ``disease``) of a central sample window, refined by a direct Fourier transform of
   the mask pixels; the plant spacing is the strongest peak of the spectrum along the
   row direction (the plants' period along the row).
2. **Phase of each row** (:func:`row_phases`): where along the row its slots lie, from
   the row's Fourier coefficient at the plant spacing, summed over the windows of the
   whole raster (so every window agrees on it).
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

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from agriseg.areas import pixel_size_m
from agriseg.atomic import write_text_atomic
from agriseg.classes import NODATA, ClassList
from agriseg.errors import InputError
from agriseg.health import raster_crs
from agriseg.vector_outputs import geopackage_output
from agriseg.zones import field_labeller, grid_labeller, make_grid, read_fields

#: Share of a slot's core that plant pixels must cover for the slot to hold a plant.
OCCUPIED = 0.4
#: Half extent of a slot's core: along the row, in plant spacings; across, in row spacings.
CORE_ALONG, CORE_ACROSS = 0.25, 0.15
#: Pixels of a row that feed its phase: within this many row spacings of its centre line.
PHASE_BAND = 0.3
#: An empty slot is a missing plant when plants stand within this many slots on both sides.
GAP_REACH = 3
#: Ground ranges searched, in metres: row spacing and plant spacing.
ROW_SPACING_M = (0.2, 1.5)
PLANT_SPACING_M = (0.05, 0.6)
#: Edge of the central sample window that the row geometry is measured on, in pixels.
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
        dx, dy = (
            transform.a * math.cos(self.angle) + transform.b * math.sin(self.angle),
            (transform.d * math.cos(self.angle) + transform.e * math.sin(self.angle)),
        )
        return {
            "direction_deg": round(math.degrees(math.atan2(dy, dx)) % 180.0, 2),
            "row_spacing_m": round(self.row_spacing * self.gsd_m, 4),
            "plant_spacing_m": round(self.plant_spacing * self.gsd_m, 4),
        }


@dataclass(frozen=True)
class PlantCount:
    """Plants of one class raster.

    Attributes:
        plants: Points (``plant_id``, ``class``, ``area_m2``, ``field_id``, ``zone_id``).
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


def estimate_rows(mask: np.ndarray, gsd_m: float) -> Rows | None:
    """The row lattice of a plant mask (True on plant pixels); None with too few rows in it."""
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
    xs, ys = cc + 0.5, rr + 0.5
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
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    offset = float(np.angle(np.exp(2j * np.pi * v / row_spacing).sum())) / (2 * np.pi)
    # Plant spacing: the strongest period along the rows.
    full = np.fft.fftshift(np.abs(np.fft.fft2(centred)) ** 2)
    lo, hi = (m / gsd_m for m in PLANT_SPACING_M)
    freqs = np.linspace(1 / min(hi, max(h, w) / 3), 1 / max(lo, 2.5), 600)
    coords = [
        freqs * math.sin(angle) * h + h // 2,
        freqs * math.cos(angle) * w + w // 2,
    ]
    from scipy import ndimage

    profile = ndimage.map_coordinates(ndimage.gaussian_filter(full, 1.0), coords, order=1)
    plant_spacing = 1 / float(freqs[int(np.argmax(profile))])
    del u
    return Rows(float(angle), float(row_spacing), plant_spacing, offset * row_spacing, gsd_m)


def _windows(height: int, width: int, size: int) -> Iterator[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def _grown(window: Window, halo: int, height: int, width: int) -> Window:
    col0, row0 = max(int(window.col_off) - halo, 0), max(int(window.row_off) - halo, 0)
    col1 = min(int(window.col_off + window.width) + halo, width)
    row1 = min(int(window.row_off + window.height) + halo, height)
    return Window(col0, row0, col1 - col0, row1 - row0)


def _pixel_uv(rows: Rows, window: Window) -> tuple[np.ndarray, np.ndarray]:
    cols = np.arange(int(window.width), dtype=np.float64) + window.col_off + 0.5
    rws = np.arange(int(window.height), dtype=np.float64) + window.row_off + 0.5
    return rows.uv(cols[None, :], rws[:, None])


def row_phases(src: rasterio.DatasetReader, ids: np.ndarray, rows: Rows, size: int) -> dict:
    """Where along each row its slots lie: row index -> ``u`` of slot 0 (pixels)."""
    sums: dict[int, complex] = {}
    for window in _windows(src.height, src.width, size):
        mask = np.isin(src.read(1, window=window), ids)
        u, v = _pixel_uv(rows, window)
        k = np.rint((v - rows.offset) / rows.row_spacing).astype(np.int64)
        near = mask & (
            np.abs(v - rows.offset - k * rows.row_spacing) < PHASE_BAND * rows.row_spacing
        )
        if not near.any():
            continue
        k, turn = k[near], 2 * np.pi * u[near] / rows.plant_spacing
        k0 = int(k.min())
        re = np.bincount(k - k0, weights=np.cos(turn))
        im = np.bincount(k - k0, weights=np.sin(turn))
        for i in np.flatnonzero(np.bincount(k - k0)):
            sums[k0 + int(i)] = sums.get(k0 + int(i), 0j) + complex(re[i], im[i])
    return {k: float(np.angle(z)) / (2 * np.pi) * rows.plant_spacing for k, z in sums.items()}


@dataclass
class _Tally:
    """What the windows found, gathered for the whole raster."""

    plants: list[np.ndarray]
    missing: list[np.ndarray]
    valid_px: int
    field_px: np.ndarray
    field_plants: np.ndarray
    zone_px: np.ndarray
    zone_plants: np.ndarray
    plant_zone: dict[str, list[np.ndarray]]


def _count_window(
    classes: np.ndarray,
    window: Window,
    core: Window,
    ids: np.ndarray,
    disease_ids: np.ndarray,
    rows: Rows,
    phases: dict[int, float],
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
    ks = np.unique(k)
    phase = np.array([phases.get(int(i), np.nan) for i in ks])
    phase_px = phase[np.searchsorted(ks, k)]
    sf = (u - phase_px) / rows.plant_spacing
    on_row = np.isfinite(sf)
    s = np.where(on_row, np.rint(np.where(on_row, sf, 0)), 0).astype(np.int64)
    along = (sf - s) * rows.plant_spacing
    if not on_row.any():
        return np.zeros((0, 4)), np.zeros((0, 2))
    k0, s0 = int(k[on_row].min()), int(s[on_row].min()) - GAP_REACH
    n_s = int(s[on_row].max()) - s0 + 1 + GAP_REACH
    n_k = int(k[on_row].max()) - k0 + 1
    cell = np.where(on_row, (k - k0) * n_s + (s - s0), 0)
    n = n_k * n_s
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
    kk, ss = np.divmod(np.arange(n), n_s)
    kk, ss = kk + k0, ss + s0
    slot_u = np.array([phases.get(int(i), np.nan) for i in kk]) + ss * rows.plant_spacing
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
    grid = occupied.reshape(n_k, n_s)
    before = np.zeros_like(grid)
    after = np.zeros_like(grid)
    for d in range(1, GAP_REACH + 1):
        before[:, d:] |= grid[:, :-d]
        after[:, :-d] |= grid[:, d:]
    gap = judged & ~occupied & holds & (before & after).ravel()
    missing = np.column_stack([slot_c[gap], slot_r[gap]])
    return plants, missing


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
        edge = min(SAMPLE_PX, height), min(SAMPLE_PX, width)
        sample = Window((width - edge[1]) // 2, (height - edge[0]) // 2, edge[1], edge[0])
        rows = estimate_rows(np.isin(src.read(1, window=sample), ids), gsd)
        fields = read_fields(options.fields, crs) if options.fields else None
        grid = make_grid(crs, transform, width, height, options.grid_m) if options.grid_m else None
        label_field = field_labeller(fields, transform) if fields else None
        label_zone = grid_labeller(grid, crs, transform) if grid else None
        n_fields = len(fields.ids) if fields else 0
        n_zones = grid.n_cells if grid else 0
        tally = _Tally(
            [],
            [],
            0,
            np.zeros(n_fields, np.int64),
            np.zeros(n_fields, np.int64),
            np.zeros(n_zones, np.int64),
            np.zeros(n_zones, np.int64),
            {"field": [], "zone": []},
        )
        phases = row_phases(src, ids, rows, options.window_px) if rows else {}
        halo = 0
        if rows:
            halo = math.ceil((GAP_REACH + 1) * rows.plant_spacing + rows.row_spacing) + 2
        for core in _windows(height, width, options.window_px):
            core_valid = src.read(1, window=core) != NODATA
            tally.valid_px += int(core_valid.sum())
            found = np.zeros((0, 4))
            if rows:
                window = _grown(core, halo, height, width)
                found, missing = _count_window(
                    src.read(1, window=window), window, core, ids, disease_ids, rows, phases
                )
                tally.plants.append(found)
                tally.missing.append(missing)
            plant_r = (found[:, 1] - core.row_off).astype(np.int64)
            plant_c = (found[:, 0] - core.col_off).astype(np.int64)
            plant_r = np.clip(plant_r, 0, int(core.height) - 1)
            plant_c = np.clip(plant_c, 0, int(core.width) - 1)
            for name, label, px, per in (
                ("field", label_field, tally.field_px, tally.field_plants),
                ("zone", label_zone, tally.zone_px, tally.zone_plants),
            ):
                if label is None:
                    continue
                zone = label(core)
                inside = core_valid & (zone >= 0)
                px += np.bincount(zone[inside], minlength=px.size)
                at = zone[plant_r, plant_c]
                per += np.bincount(at[at >= 0], minlength=per.size)
                tally.plant_zone[name].append(at)
    pixel_m2 = gsd * gsd
    return _result(tally, classes, rows, transform, crs, pixel_m2, fields, grid)


def _result(tally, classes, rows, transform, crs, pixel_m2, fields, grid) -> PlantCount:  # type: ignore[no-untyped-def]
    found = np.concatenate(tally.plants) if tally.plants else np.zeros((0, 4))
    missing = np.concatenate(tally.missing) if tally.missing else np.zeros((0, 2))
    x, y = transform * (found[:, 0], found[:, 1])
    plants = gpd.GeoDataFrame(
        {
            "plant_id": np.arange(len(found), dtype=np.int64),
            "class": np.where(found[:, 3] * 2 > found[:, 2], "diseased", "crop"),
            "area_m2": found[:, 2] * pixel_m2,
        },
        geometry=gpd.points_from_xy(x, y),
        crs=crs,
    )
    mx, my = transform * (missing[:, 0], missing[:, 1])
    gaps = gpd.GeoDataFrame(
        {"gap_id": np.arange(len(missing), dtype=np.int64)},
        geometry=gpd.points_from_xy(mx, my),
        crs=crs,
    )
    del classes
    if fields is not None:
        at = np.concatenate(tally.plant_zone["field"])
        ids = np.array([*fields.ids, ""], dtype=object)
        plants.insert(3, "field_id", np.where(at >= 0, ids[at], None))
    if grid is not None:
        plants.insert(3, "zone_id", np.concatenate(tally.plant_zone["zone"]).astype(np.int64))
    table = []
    if fields is not None:
        for i, fid in enumerate(fields.ids):
            area = tally.field_px[i] * pixel_m2
            table.append(_density({"field_id": fid}, int(tally.field_plants[i]), area))
    zones = []
    if grid is not None:
        for cell in np.flatnonzero(tally.zone_px).tolist():
            area = tally.zone_px[cell] * pixel_m2
            key = {"zone_id": cell, "row": cell // grid.n_cols, "col": cell % grid.n_cols}
            zones.append(_density(key, int(tally.zone_plants[cell]), area))
    return PlantCount(plants, gaps, rows, tally.valid_px * pixel_m2, table, zones)


def _density(key: dict[str, Any], plants: int, area_m2: float) -> dict[str, Any]:
    return {
        **key,
        "plants": plants,
        "area_m2": round(float(area_m2), 3),
        "plants_per_m2": round(plants / area_m2, 3) if area_m2 else None,
    }


@dataclass(frozen=True)
class PlantResult:
    """What :func:`count_run` wrote for one run."""

    stem: str
    count: PlantCount
    gpkg: Path
    json: Path


def write_plants(count: PlantCount, transform: Affine, gpkg: Path, summary: Path) -> None:
    """Write the ``plants`` and ``missing_plants`` point layers and the JSON summary,
    each file atomically."""
    with geopackage_output(gpkg) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The filename extension should be 'gpkg'")
        count.plants.to_file(tmp, driver="GPKG", layer="plants")
        count.missing.to_file(tmp, driver="GPKG", layer="missing_plants")
    write_text_atomic(summary, json.dumps(count.summary(transform), indent=2) + "\n")


def count_run(
    run_dir: Path, options: PlantOptions = PlantOptions(), stems: Sequence[str] | None = None
) -> list[PlantResult]:
    """Count the plants of every run in ``run_dir`` (a run's or a batch's ``--out``; or
    those of ``stems``) and write ``<stem>.plants.gpkg`` and ``<stem>.plants.json``
    beside each run's outputs."""
    from agriseg.prescriptions import find_runs

    results = []
    for run in [r for r in find_runs(run_dir) if stems is None or r.stem in stems]:
        classes_path = run.run_dir / f"{run.stem}.classes.tif"
        if not classes_path.is_file():
            raise InputError(
                f"{classes_path}: missing, so there is nothing to count; rerun agriseg run"
            )
        gsd = (run.summary.get("scale") or {}).get("input_gsd_m")
        count = count_plants(classes_path, options, gsd_m=gsd)
        with rasterio.open(classes_path) as src:
            transform = src.transform
        gpkg = run.run_dir / f"{run.stem}.plants.gpkg"
        summary = run.run_dir / f"{run.stem}.plants.json"
        write_plants(count, transform, gpkg, summary)
        results.append(PlantResult(run.stem, count, gpkg, summary))
    return results

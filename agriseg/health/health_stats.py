"""Field-health statistics: class areas, cover, weed pressure, disease incidence, score.

Areas come from pixel counts of the (sieved) class raster times the ground area of
each pixel (:mod:`agriseg.io.areas`), accumulated block by block, optionally split
into zones (fields, grid cells) by a labelling function.

Every index is a sum over the classes' roles (:mod:`agriseg.classes`), so a model
with its own classes (``soil, maize, grass_weed, broadleaf_weed, thistle``) gets the
same statistics: ``crop``, ``weed`` and ``disease`` below are the summed areas of
the classes with that role. The health score is
``100 × (1 − weed_pressure) × (1 − disease_incidence)``, where
``weed_pressure = weed / (crop + weed)`` and
``disease_incidence = disease / (crop + disease)``. It is 100 for clean,
healthy crop, falls in proportion to the weed share among the plants competing
with the crop and to the diseased share of the crop, and is 0 where there is no
healthy crop at all. It is undefined (``None``/NaN) where there is no vegetation.
Vegetation cover is (crop + weed + disease) over the whole valid area (background
and ``other`` classes such as water or residue included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.windows import Window

from agriseg.classes import ROLES, ClassList, Role
from agriseg.errors import InputError
from agriseg.health.vectorize import blocks
from agriseg.io.areas import as_pyproj, pixel_area_rows_m2

#: Labels each pixel of a window with a zone index (``-1``: in no zone).
ZoneLabeller = Callable[[Window], np.ndarray]


def raster_crs(dataset: rasterio.DatasetReader, path: Path) -> CRS:
    """The pyproj CRS of an open raster; :class:`InputError` if it has none."""
    if dataset.crs is None:
        raise InputError(
            f"{path}: the raster has no CRS, so ground areas cannot be measured; "
            "assign one (e.g. `gdal_edit.py -a_srs EPSG:32633`) or run with --assume-crs"
        )
    return as_pyproj(dataset.crs)


@dataclass(frozen=True)
class Zoning:
    """A way to split a raster into zones (fields, grid cells...).

    Attributes:
        label: Labels the pixels of a window with zone indexes in ``[0, count)`` or
            ``-1`` (in no zone); None puts every pixel in zone 0.
        count: Number of zones.
    """

    label: ZoneLabeller | None = None
    count: int = 1

    def labels(self, window: Window) -> np.ndarray:
        if self.label is None:
            return np.zeros((int(window.height), int(window.width)), dtype="int64")
        return np.asarray(self.label(window), dtype="int64")


#: The whole raster as one zone.
WHOLE = Zoning()


def zone_class_areas(
    classes_path: Path,
    n_classes: int,
    zonings: Sequence[Zoning],
    *,
    block_size: int = 2048,
) -> list[np.ndarray]:
    """Ground area of each class in each zone of every zoning, in one read of the raster.

    Args:
        classes_path: Class raster (uint8, nodata 255) with a CRS.
        n_classes: Number of classes (ids ``0..n_classes-1``).
        zonings: The zonings to measure.
        block_size: Edge of the blocks read at a time, in pixels.

    Returns:
        One float64 array of shape ``(zoning.count, n_classes)`` per zoning, in m².
    """
    totals = [np.zeros(z.count * n_classes) for z in zonings]
    with rasterio.open(classes_path) as src:
        crs = raster_crs(src, classes_path)
        for row in blocks(src.height, src.width, block_size):
            first = row[0]
            rows = np.arange(first.row_off, first.row_off + first.height)
            row_area = pixel_area_rows_m2(crs, src.transform, rows, src.width / 2)
            planar = np.ptp(row_area) == 0  # one pixel area for all
            for window in row:
                data = src.read(1, window=window)
                area = None if planar else np.broadcast_to(row_area[:, None], data.shape)
                for zoning, total in zip(zonings, totals, strict=True):
                    label = zoning.labels(window)
                    keep = (data < n_classes) & (label >= 0)  # nodata (255) is not a class
                    index = label[keep] * n_classes + data[keep]
                    if area is None:
                        total += np.bincount(index, minlength=total.size) * row_area[0]
                    else:
                        total += np.bincount(index, weights=area[keep], minlength=total.size)
    return [t.reshape(z.count, n_classes) for z, t in zip(zonings, totals, strict=True)]


def planar_class_areas(
    counts: Iterable[np.ndarray], n_classes: int, pixel_area_m2: float
) -> np.ndarray:
    """Ground area (m²) of each class from the pixel counts of the raster's
    ``block_size`` windows (values 0-255, nodata counted but left out), in the order
    :func:`zone_class_areas` reads them (block rows, then columns), on a CRS where every
    pixel has ``pixel_area_m2``: the same floating-point sums as its whole-raster zoning,
    so the same bits, without reading the raster."""
    total = np.zeros(n_classes)
    for window_counts in counts:
        total += window_counts[:n_classes] * pixel_area_m2
    return total


def class_areas_m2(
    classes_path: Path,
    n_classes: int,
    *,
    block_size: int = 2048,
    zones: ZoneLabeller | None = None,
    n_zones: int = 1,
) -> np.ndarray:
    """Ground area of each class in each zone of a class raster (one zoning: see
    :func:`zone_class_areas`); ``(n_zones, n_classes)`` in m²."""
    zoning = Zoning(zones, n_zones)
    return zone_class_areas(classes_path, n_classes, [zoning], block_size=block_size)[0]


def role_areas(areas: np.ndarray, classes: ClassList) -> dict[Role, np.ndarray]:
    """Summed class areas per role (classes on the last axis of ``areas``)."""
    areas = np.asarray(areas, dtype="float64")
    return {role: areas[..., list(classes.ids_with_role(role))].sum(axis=-1) for role in ROLES}


def health_indices(areas: np.ndarray, classes: ClassList) -> dict[str, np.ndarray]:
    """Cover, weed pressure, disease incidence and health score from class areas.

    Args:
        areas: Class areas with classes on the last axis (any leading shape).
        classes: The classes, whose roles say what each area counts as.

    Returns:
        Arrays of the leading shape; NaN where a ratio has a zero denominator
        (the score only where there is no vegetation at all).
    """
    areas = np.asarray(areas, dtype="float64")
    by_role = role_areas(areas, classes)
    crop, weed, diseased = by_role["crop"], by_role["weed"], by_role["disease"]
    vegetation = crop + weed + diseased
    total = areas.sum(axis=-1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    # A model without weed (or disease) classes cannot see any: the index is undefined.
    nothing = np.full(crop.shape, np.nan)
    weed_pressure = ratio(weed, crop + weed) if classes.ids_with_role("weed") else nothing
    disease_incidence = (
        ratio(diseased, crop + diseased) if classes.ids_with_role("disease") else nothing
    )
    # An undefined ratio only happens with no crop, where the other factor is already 0.
    score = 100.0 * (1 - np.nan_to_num(weed_pressure)) * (1 - np.nan_to_num(disease_incidence))
    return {
        "vegetation_cover": ratio(vegetation, total),
        "weed_pressure": weed_pressure,
        "disease_incidence": disease_incidence,
        "health_score": np.where(vegetation > 0, score, np.nan),
    }


def _number(value: float, digits: int) -> float | None:
    return None if not np.isfinite(value) else round(float(value), digits)


def health_summary(areas: np.ndarray, classes: ClassList) -> dict[str, Any]:
    """JSON-ready health statistics for one set of class areas (m², class order).

    Returns:
        ``valid_area_m2``/``_ha``, per class ``area_m2``, ``area_ha``, ``share`` of the
        valid area and ``role``, the area and share of each role present
        (``roles``), and the indices of :func:`health_indices` (``None`` where
        undefined).
    """
    areas = np.asarray(areas, dtype="float64")
    total = float(areas.sum())
    per_class = {
        c.name: {
            "area_m2": round(float(areas[c.id]), 4),
            "area_ha": round(float(areas[c.id]) / 1e4, 8),
            "share": round(float(areas[c.id]) / total, 6) if total > 0 else 0.0,
            "role": c.role,
        }
        for c in classes
    }
    roles = {
        role: {
            "area_m2": round(float(area), 4),
            "share": round(float(area) / total, 6) if total > 0 else 0.0,
        }
        for role, area in role_areas(areas, classes).items()
        if classes.ids_with_role(role)
    }
    indices = health_indices(areas, classes)
    return {
        "valid_area_m2": round(total, 4),
        "valid_area_ha": round(total / 1e4, 8),
        "classes": per_class,
        "roles": roles,
        **{
            name: _number(float(value), 2 if name == "health_score" else 6)
            for name, value in indices.items()
        },
    }

"""Class raster → polygons: the whole pass, and finishing the joined polygons.

The pass streams over strips of rows cut into panes of ``pane_size`` pixels
(:mod:`~agriseg.health.panes`: the grid and sieving), polygonises each pane
(:mod:`~agriseg.health.pane_polygons`) and joins the parts across seams
(:mod:`~agriseg.health.seams`), so memory is bounded by one strip plus the parts of
regions still open across the seam below it, not by the raster. A region spanning
the whole raster (the soil between crop rows, say) is one polygon, so its size grows
with the raster.

Polygons are built in pixel coordinates, where every vertex is an integer and
unions along pane seams are exact; :func:`finish_polygons` simplifies them (a
coverage, so shared edges stay shared) and moves them to the raster's CRS. Same-class
regions are 4-connected (pixels touching only at a corner are separate polygons), so
no two same-class polygons ever share an edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine

from agriseg.health.polygon_batch import PolygonBatch
from agriseg.health.seams import StripPolygons
from agriseg.health.strips import file_strips

#: Polygons simplified together; edges shared with polygons outside a group stay exact.
SIMPLIFY_GROUP = 50_000


def _regroup(batches: Iterable[PolygonBatch], size: int) -> Iterator[PolygonBatch]:
    """Re-chunk a stream of batches into batches of about ``size`` polygons."""
    pending: list[PolygonBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        if count >= size:
            yield PolygonBatch.concat(pending)
            pending, count = [], 0
    if count:
        yield PolygonBatch.concat(pending)


def simplify_coverage(geometry: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify a group of pixel-coordinate polygons as one coverage.

    Edges shared by two polygons of the group are simplified once, so they stay
    shared: no gaps or overlaps appear. Edges on the group's outline (nodata, or
    polygons of another group) are kept exactly, which is what lets groups be
    simplified one at a time. If the result is not valid the group is returned
    unsimplified.

    Args:
        geometry: Polygons with integer (pixel-corner) vertices.
        tolerance: Simplification distance in pixels.
    """
    if tolerance <= 0 or not len(geometry):
        return geometry
    # Give every shared edge the same vertices on both sides, as a coverage requires.
    noded = shapely.segmentize(geometry, 1.0)
    simplified = shapely.coverage_simplify(noded, tolerance, simplify_boundary=False)
    ok = shapely.is_valid(simplified).all() and not shapely.is_empty(simplified).any()
    return np.asarray(simplified, dtype=object) if ok else geometry


def to_crs_coordinates(geometry: np.ndarray, transform: Affine) -> np.ndarray:
    """Move pixel-coordinate geometries to the raster CRS with its affine ``transform``."""
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geometry, apply)


def finish_polygons(
    batches: Iterable[PolygonBatch],
    transform: Affine,
    simplify_px: float = 0.0,
    coverage: bool = True,
) -> Iterator[PolygonBatch]:
    """Simplify (if ``simplify_px``) and move pixel-coordinate batches to the CRS.

    With ``coverage`` the polygons tile the raster, so they are simplified as
    coverages (shared edges stay shared, the outline exact); else (some classes are
    not vectorised, so their neighbours' edges are outline) each polygon is simplified
    on its own, keeping it valid, which may leave slivers of gap or overlap between
    touching polygons.
    """
    stream: Iterable[PolygonBatch] = batches
    if simplify_px > 0 and coverage:
        stream = _regroup(stream, SIMPLIFY_GROUP)
    for batch in stream:
        if not len(batch):
            continue
        geometry = batch.geometry
        if simplify_px > 0:
            geometry = (
                simplify_coverage(geometry, simplify_px)
                if coverage
                else np.asarray(shapely.simplify(geometry, simplify_px), dtype=object)
            )
        yield batch.with_geometry(to_crs_coordinates(geometry, transform))


def vectorize(
    classes_path: Path,
    confidence_path: Path | None = None,
    *,
    pane_size: int = 2048,
    simplify_px: float = 0.0,
) -> Iterator[PolygonBatch]:
    """Polygons of a class raster, streamed in batches, in the raster's CRS.

    Every polygon is one maximal 4-connected region of one class (nodata is left
    out), with holes; regions cut by pane seams are merged, so no two same-class
    polygons share an edge.

    Args:
        classes_path: Class raster (uint8, nodata 255), sieved beforehand if wanted.
        confidence_path: Matching confidence raster (0–100, nodata 255), or None.
        pane_size: Edge of the processing panes in pixels; memory grows with its square.
        simplify_px: Coverage-simplification tolerance in pixels (0: none).

    Yields:
        Batches of finished polygons.
    """
    with rasterio.open(classes_path) as src:
        height, width, transform = src.height, src.width, src.transform
    polygons = StripPolygons(height, width, pane_size)
    batches = (
        polygons.add(strip.core, strip.confidence, strip.row_off)
        for strip in file_strips(classes_path, confidence_path, pane_size)
    )
    yield from finish_polygons(batches, transform, simplify_px)

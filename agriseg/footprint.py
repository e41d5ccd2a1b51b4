"""The surveyed area: the valid-data footprint of a raster, as polygons.

A survey's class raster holds nodata (255) where the orthomosaic had no pixels: its
footprint is what was imaged, and nothing drawn from the survey (a spray section, a
rate zone, a field boundary sent to a terminal) may reach beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.features import shapes
from rasterio.windows import Window

from agriseg.errors import InputError

#: Rows of the mask read at once (bounds memory on large rasters).
STRIP_ROWS = 2048


@dataclass(frozen=True)
class SurveyedArea:
    """A raster's valid-data footprint.

    Attributes:
        exact: The union of its valid pixels, in the raster's CRS (pixel edges).
        outline: ``exact`` simplified inwards by at most ``tolerance``: few vertices,
            never outside ``exact``. What prescriptions are clipped to.
        crs: The raster's CRS.
        tolerance: How far ``outline`` may lie inside ``exact``, in CRS units.
    """

    exact: shapely.Geometry
    outline: shapely.Geometry
    crs: CRS
    tolerance: float


def _valid_pixels(src: rasterio.DatasetReader) -> shapely.Geometry:
    """Union of the valid pixels, from the dataset mask, strip by strip."""
    parts: list[shapely.Geometry] = []
    for row in range(0, src.height, STRIP_ROWS):
        window = Window(0, row, src.width, min(STRIP_ROWS, src.height - row))
        mask = src.dataset_mask(window=window)
        valid = mask > 0
        if not valid.any():
            continue
        transform = src.window_transform(window)
        parts.extend(
            shapely.geometry.shape(geometry)
            for geometry, _ in shapes(mask, mask=valid, transform=transform)
        )
    # The pixel polygons of a strip tile it without overlap, and strips meet edge to
    # edge: a coverage, whose union is exact and fast.
    return shapely.coverage_union_all(np.array(parts, dtype=object))


def inward_outline(exact: shapely.Geometry, tolerance: float) -> shapely.Geometry:
    """``exact`` with its pixel steps simplified away, lying inside ``exact``.

    Shrunk by ``tolerance`` first, so the simplification (which moves edges by at most
    ``tolerance``) stays inside; the intersection guards the rest (a small nodata hole
    the simplification would close).
    """
    shrunk = shapely.buffer(exact, -tolerance, join_style="mitre")
    simple = shapely.simplify(shrunk, tolerance, preserve_topology=True)
    return shapely.make_valid(shapely.intersection(simple, exact))


def surveyed_area(path: Path) -> SurveyedArea:
    """The valid-data footprint of the raster at ``path`` (nodata and alpha excluded).

    Its outline lies inside the pixels by at most 0.75 pixel.

    Raises:
        InputError: the raster is missing, has no CRS or no valid pixel.
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: missing; rerun agriseg run to make the class raster")
    with rasterio.open(path) as src:
        if src.crs is None:
            raise InputError(
                f"{path}: no CRS, so no map to spray by; rerun agriseg run with --assume-crs"
            )
        exact = _valid_pixels(src)
        tolerance = 0.75 * max(abs(src.res[0]), abs(src.res[1]))
        crs = CRS.from_user_input(src.crs)
    if exact.is_empty:
        raise InputError(f"{path}: every pixel is nodata, so nothing was surveyed")
    return SurveyedArea(exact, inward_outline(exact, tolerance), crs, tolerance)

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
import shapely.affinity
from affine import Affine
from pyproj import CRS
from rasterio.features import shapes
from rasterio.windows import Window

from agriseg.errors import InputError
from agriseg.io.areas import pixel_size_m
from agriseg.io.raster import GEOREFERENCE_FIX

#: Rows of the mask read at once (bounds memory on large rasters).
STRIP_ROWS = 2048

#: How far the outline's edges may move (each way: shrunk, then simplified) to lose the
#: pixel steps: this many metres, or 0.75 pixel where pixels are coarser. 5 cm keeps a
#: drone survey's boundary to a few hundred vertices, which terminals read.
OUTLINE_TOLERANCE_M = 0.05


@dataclass(frozen=True)
class SurveyedArea:
    """A raster's valid-data footprint.

    Attributes:
        exact: The union of its valid pixels, in the raster's CRS (pixel edges).
        outline: ``exact`` shrunk by ``tolerance`` and simplified by as much: few
            vertices, never outside ``exact``, its edges up to (1 + √2) ``tolerance``
            from a pixel corner of ``exact``. What prescriptions are clipped to.
        crs: The raster's CRS.
        tolerance: See :data:`OUTLINE_TOLERANCE_M`, in CRS units.
    """

    exact: shapely.Geometry
    outline: shapely.Geometry
    crs: CRS
    tolerance: float


def _valid_pixels(src: rasterio.DatasetReader, strip_rows: int) -> shapely.Geometry:
    """Union of the valid pixels, from the dataset mask, strip by strip."""
    parts: list[shapely.Geometry] = []
    for row in range(0, src.height, strip_rows):
        window = Window(0, row, src.width, min(strip_rows, src.height - row))
        mask = src.dataset_mask(window=window)
        valid = mask > 0
        if valid.any():
            # In pixel coordinates (integers, exact), so strips meet edge to edge.
            pixels = Affine.translation(0, row)
            parts.extend(
                shapely.geometry.shape(g) for g, _ in shapes(mask, mask=valid, transform=pixels)
            )
    # The pixel polygons tile the raster without overlap: a coverage, whose union is
    # exact and fast.
    union = shapely.coverage_union_all(np.array(parts, dtype=object))
    a, b, c, d, e, f = src.transform[:6]
    return shapely.affinity.affine_transform(union, (a, b, d, e, c, f))


def inward_outline(exact: shapely.Geometry, tolerance: float) -> shapely.Geometry:
    """``exact`` with its pixel steps simplified away, lying inside ``exact``.

    Shrunk by ``tolerance`` first, so the simplification (which moves edges by at most
    ``tolerance``) stays inside; the intersection guards the rest (a small nodata hole
    the simplification would close).
    """
    shrunk = shapely.buffer(exact, -tolerance, join_style="mitre")
    simple = shapely.simplify(shrunk, tolerance, preserve_topology=True)
    return shapely.make_valid(shapely.intersection(simple, exact))


def surveyed_area(path: Path, strip_rows: int = STRIP_ROWS) -> SurveyedArea:
    """The valid-data footprint of the raster at ``path`` (nodata and alpha excluded).

    Its outline lies inside the valid pixels, up to 12 cm from their edge (1.8 pixels
    for pixels coarser than 6.7 cm; see :data:`OUTLINE_TOLERANCE_M`).

    Raises:
        InputError: the raster is missing, has no CRS or no valid pixel.
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: missing; rerun agriseg run to make the class raster")
    with rasterio.open(path) as src:
        if src.crs is None:
            raise InputError(f"{path}: no CRS, so no map to spray by; {GEOREFERENCE_FIX}")
        exact = _valid_pixels(src, strip_rows)
        pixel = max(abs(src.res[0]), abs(src.res[1]))  # CRS units
        pixel_m = pixel_size_m(src.crs, src.transform, src.width, src.height)
        tolerance = pixel * max(0.75, OUTLINE_TOLERANCE_M / pixel_m)
        crs = CRS.from_user_input(src.crs)
    if exact.is_empty:
        raise InputError(f"{path}: every pixel is nodata, so nothing was surveyed")
    return SurveyedArea(exact, inward_outline(exact, tolerance), crs, tolerance)

"""GeoJSON text of polygons (RFC 7946): WGS84 lon/lat, 7 decimals, exteriors counter-clockwise.

Pure functions of NumPy arrays and shapely geometries (no pandas or GeoPandas), so a
slice of features can be made into text anywhere, a worker process or a Dask worker
included, and always be the same text. :class:`agriseg.health.vector_outputs.GeoJSONWriter`
writes the text into a FeatureCollection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from agriseg.health.vectorize import PicklePolygons

#: Decimal places of GeoJSON coordinates: 1e-7° is about 1 cm on the ground.
GEOJSON_DECIMALS = 7

#: Largest distance (degrees) a vertex moves when rounded to the GeoJSON grid.
_ROUNDING_SHIFT = math.sqrt(2) * 0.5 * 10.0**-GEOJSON_DECIMALS


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _column_json(values: np.ndarray) -> list[str]:
    """Each value of a column as the JSON text ``json.dumps`` gives it (NaN, inf: null).

    Column by column rather than a ``json.dumps`` per feature: a fifth of the time, and
    the same text (Python's float and int reprs are JSON's)."""
    items = values.tolist()
    # Object columns (pandas' nullable ones, Int64, boolean..., come as such and may
    # hold pd.NA, which json.dumps refuses, as it did row by row) go value by value.
    kind = values.dtype.kind
    if kind == "b":
        return ["true" if v else "false" for v in items]
    if kind in "iu":
        return [str(v) for v in items]
    if kind == "f":
        return [repr(v) if math.isfinite(v) else "null" for v in items]
    return [json.dumps(_json_value(v), allow_nan=False) for v in items]


def features_json(properties: Mapping[str, np.ndarray], geometry_json: np.ndarray) -> list[str]:
    """GeoJSON Feature text of each row: its ``properties`` (columns, by name) as a
    compact JSON object (in column order, as ``json.dumps(..., separators=(",", ":"))``
    writes it) and its geometry's GeoJSON text."""
    keys = [json.dumps(str(name)).replace("{", "{{").replace("}", "}}") for name in properties]
    template = (
        '{{"type":"Feature","properties":{{'
        + ",".join(f"{key}:{{}}" for key in keys)
        + '}},"geometry":{}}}'
    )
    columns = [_column_json(properties[name]) for name in properties]
    return [template.format(*row) for row in zip(*columns, geometry_json, strict=True)]


def rounding_keeps_lattice_polygons_valid(
    crs: CRS, transform: Affine, height: int, width: int
) -> bool:
    """Whether plain rounding to the GeoJSON grid keeps this raster's pixel-edge polygons valid.

    Two edges of a pixel-edge polygon that share no vertex are at least one pixel
    apart; rounding moves each vertex by at most :data:`_ROUNDING_SHIFT`, so edges can
    meet only if a pixel, seen in WGS84 degrees, is narrower than twice that. The
    narrowest pixel is taken as the smallest singular value of the pixel-to-lon/lat
    Jacobian at the raster's corners and centre.
    """
    to_wgs84 = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    cols = np.array([0, width, 0, width, width / 2])
    rows = np.array([0, 0, height, height, height / 2])
    a, b, c, d, e, f = transform[:6]
    lonlat = [
        np.array(to_wgs84.transform(a * x + b * y + c, d * x + e * y + f))
        for x, y in ((cols, rows), (cols + 1, rows), (cols, rows + 1))
    ]
    if not np.isfinite(lonlat).all():  # a corner off the Earth's disk
        return False
    jacobians = np.stack([lonlat[1] - lonlat[0], lonlat[2] - lonlat[0]], axis=-1).transpose(1, 0, 2)
    narrowest = np.linalg.svd(jacobians, compute_uv=False).min()
    return bool(narrowest > 2.1 * _ROUNDING_SHIFT)


def _all_finite(geometry: np.ndarray) -> np.ndarray:
    """Whether every coordinate of each geometry is finite (missing geometries: True)."""
    coords, owner = shapely.get_coordinates(geometry, return_index=True)
    bad = np.zeros(len(geometry), dtype=bool)
    bad[owner[~np.isfinite(coords).all(axis=1)]] = True
    return ~bad


def to_rfc7946(geometry: np.ndarray, crs: CRS, *, snap_safely: bool = True) -> np.ndarray:
    """Geometries as RFC 7946 wants them: WGS84 lon/lat, rounded, exteriors counter-clockwise.

    With ``snap_safely`` coordinates are snapped to the ``1e-7``° grid with GEOS
    precision reduction, which keeps every geometry valid (a sliver narrower than the
    grid collapses rather than self-intersects; a polygon smaller than it becomes
    empty). Without it they are only rounded, ~10x faster, which is safe where
    :func:`rounding_keeps_lattice_polygons_valid` says so.

    A geometry that cannot be projected comes back as None (missing): one with a
    vertex that has no lon/lat (off the Earth's disk in a geostationary or
    orthographic view: PROJ gives infinity) or, when snapping, one that is invalid in
    lon/lat (a polygon around a pole).
    """
    to_wgs84 = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lonlat = shapely.transform(
        geometry, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))
    )
    lonlat = np.where(_all_finite(lonlat), lonlat, None)
    if snap_safely:
        grid = 10.0**-GEOJSON_DECIMALS
        try:
            lonlat = shapely.set_precision(lonlat, grid)
        except shapely.errors.GEOSException:  # rare: checking validity first costs every run
            usable = shapely.is_missing(lonlat) | shapely.is_valid(lonlat)
            lonlat = shapely.set_precision(np.where(usable, lonlat, None), grid)
    oriented = shapely.orient_polygons(lonlat, exterior_cw=False)
    # Print the grid values exactly (set_precision leaves them a few ulps off).
    return shapely.transform(oriented, lambda xy: np.round(xy, GEOJSON_DECIMALS))


@dataclass(frozen=True)
class FeatureText:
    """Features as GeoJSON text, ready to go into a FeatureCollection.

    Attributes:
        text: The Feature objects, separated by ``",\\n"`` ("" when none).
        count: How many features ``text`` holds.
        unprojectable: Features left out because they cannot be projected to WGS84.
    """

    text: str
    count: int
    unprojectable: int


def feature_text(
    geometry: np.ndarray,
    properties: Mapping[str, np.ndarray],
    crs: CRS,
    *,
    snap_safely: bool = True,
) -> FeatureText:
    """GeoJSON text of the features with ``geometry`` (in ``crs``) and ``properties``.

    Features whose geometry vanishes at 1 cm precision are left out, and so are those
    that cannot be projected to WGS84 (see :func:`to_rfc7946`, which ``snap_safely``
    is passed to).
    """
    lonlat = to_rfc7946(geometry, crs, snap_safely=snap_safely)
    missing = shapely.is_missing(lonlat)
    unprojectable = int((missing & ~shapely.is_missing(geometry)).sum())
    keep = ~(missing | shapely.is_empty(lonlat))
    if not keep.any():
        return FeatureText("", 0, unprojectable)
    kept = {name: np.asarray(values)[keep] for name, values in properties.items()}
    features = features_json(kept, shapely.to_geojson(lonlat[keep]))
    return FeatureText(",\n".join(features), len(features), unprojectable)


@dataclass(frozen=True)
class FeatureSlice:
    """The features of one slice of a batch, to be made into text by calling it (where
    it is called: here, a worker process, a Dask worker); see :func:`feature_text`."""

    geometry: np.ndarray
    properties: Mapping[str, np.ndarray]
    crs: CRS
    snap_safely: bool = True

    def __call__(self) -> FeatureText:
        return feature_text(self.geometry, self.properties, self.crs, snap_safely=self.snap_safely)

    def __reduce__(self) -> tuple[type[FeatureSlice], tuple[Any, ...]]:
        geometry = PicklePolygons(self.geometry)
        return FeatureSlice, (geometry, self.properties, self.crs, self.snap_safely)

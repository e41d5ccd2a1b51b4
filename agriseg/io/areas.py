"""True ground areas of pixels and geometries, whatever the CRS.

In a projected CRS with a metric (or other linear) unit that is not Web Mercator,
areas are planar and scaled by the unit; otherwise (geographic CRS, Web Mercator,
which inflates areas away from the equator) they are geodesic on the CRS's
ellipsoid via :class:`pyproj.Geod`.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer


def as_pyproj(crs: object) -> CRS:
    """A pyproj CRS from a pyproj or rasterio CRS, or any user input pyproj accepts."""
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def is_planar_metric(crs: object) -> bool:
    """True when planar areas in ``crs`` are true ground areas (after unit scaling)."""
    crs = as_pyproj(crs)
    if not crs.is_projected:
        return False
    method = crs.coordinate_operation.method_name.lower() if crs.coordinate_operation else ""
    return "pseudo mercator" not in method and "popular visualisation" not in method


def _unit_factor(crs: CRS) -> float:
    axis = crs.axis_info[0]
    return float(axis.unit_conversion_factor or 1.0)


def _geod(crs: CRS) -> Geod:
    return crs.get_geod() or Geod(ellps="WGS84")


def pixel_area_rows_m2(crs: object, transform: Affine, rows: np.ndarray, col: float) -> np.ndarray:
    """Ground area (m²) of one pixel in each of ``rows``, sampled at column ``col``.

    Exact for projected metric CRSs; for geodesic cases it is the geodesic area of
    the pixel quadrilateral at that position (pixels are small enough that the
    area varies only along the raster, not inside one pixel). ``crs=None`` (a plain
    image) gives NaN: the area is unknown.
    """
    rows = np.asarray(rows, dtype="float64")
    if crs is None:
        return np.full(rows.shape, np.nan)
    crs = as_pyproj(crs)
    if is_planar_metric(crs):
        area = abs(transform.a * transform.e - transform.b * transform.d) * _unit_factor(crs) ** 2
        return np.full(rows.shape, area)
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    xs = np.empty((rows.size, 4))
    ys = np.empty((rows.size, 4))
    t = transform
    for k, (dc, dr) in enumerate(corners):
        xs[:, k] = t.a * (col + dc) + t.b * (rows + dr) + t.c
        ys[:, k] = t.d * (col + dc) + t.e * (rows + dr) + t.f
    to_lonlat = _to_lonlat(crs)
    lon, lat = to_lonlat.transform(xs, ys)
    geod = _geod(crs)
    out = np.empty(rows.size)
    for i in range(rows.size):
        area, _ = geod.polygon_area_perimeter(lon[i], lat[i])
        out[i] = abs(area)
    return out


def _to_lonlat(crs: CRS) -> Transformer:
    return Transformer.from_crs(crs, crs.geodetic_crs or CRS.from_epsg(4326), always_xy=True)


def pixel_size_m(crs: object, transform: Affine, width: int, height: int) -> float:
    """Ground edge length (m) of the raster's centre pixel: the square root of its area."""
    rows = np.array([height // 2])
    return float(np.sqrt(pixel_area_rows_m2(crs, transform, rows, width // 2)[0]))


def geometry_area_perimeter_m(geoms: np.ndarray, crs: object) -> tuple[np.ndarray, np.ndarray]:
    """Ground area (m²) and perimeter (m) of each shapely geometry, given in ``crs``.

    Planar (scaled by the CRS unit) in a projected metric CRS; geodesic on the CRS's
    ellipsoid otherwise, which is exact for polygons whose edges are short compared
    with the Earth (pixel-edged polygons always are).

    Args:
        geoms: Array of shapely (multi)polygons; empty ones get zero.
        crs: CRS the coordinates are in (pyproj, rasterio or any pyproj input).

    Returns:
        Two float64 arrays the length of ``geoms``: areas in m² and perimeters in m.
    """
    crs = as_pyproj(crs)
    geoms = np.asarray(geoms, dtype=object)
    if is_planar_metric(crs):
        factor = _unit_factor(crs)
        return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor
    to_lonlat = _to_lonlat(crs)
    lonlat = shapely.transform(geoms, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
    geod = _geod(crs)
    areas = np.zeros(len(geoms))
    perimeters = np.zeros(len(geoms))
    for i, geom in enumerate(lonlat):
        if geom is not None and not geom.is_empty:
            area, perimeter = geod.geometry_area_perimeter(geom)
            areas[i], perimeters[i] = abs(area), perimeter
    return areas, perimeters


def lonlat_points(x: np.ndarray, y: np.ndarray, crs: object) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 longitude and latitude of points given in ``crs``."""
    to_wgs84 = Transformer.from_crs(as_pyproj(crs), CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_wgs84.transform(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
    return np.asarray(lon), np.asarray(lat)

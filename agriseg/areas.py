"""True ground areas of pixels and geometries, whatever the CRS.

In a projected CRS with a metric (or other linear) unit that is not Web Mercator,
areas are planar and scaled by the unit; otherwise (geographic CRS, Web Mercator,
which inflates areas away from the equator) they are geodesic on the CRS's
ellipsoid via :class:`pyproj.Geod`.
"""

from __future__ import annotations

import numpy as np
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
    ellipsoid = crs.ellipsoid
    if ellipsoid is None:
        return Geod(ellps="WGS84")
    return Geod(a=ellipsoid.semi_major_metre, rf=ellipsoid.inverse_flattening or 0.0)


def pixel_area_rows_m2(crs: object, transform: Affine, rows: np.ndarray, col: float) -> np.ndarray:
    """Ground area (m²) of one pixel in each of ``rows``, sampled at column ``col``.

    Exact for projected metric CRSs; for geodesic cases it is the geodesic area of
    the pixel quadrilateral at that position (pixels are small enough that the
    area varies only along the raster, not inside one pixel).
    """
    crs = as_pyproj(crs)
    rows = np.asarray(rows, dtype="float64")
    if is_planar_metric(crs):
        area = abs(transform.a * transform.e - transform.b * transform.d) * _unit_factor(crs) ** 2
        return np.full(rows.shape, area)
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    xs = np.empty((rows.size, 4))
    ys = np.empty((rows.size, 4))
    for k, (dc, dr) in enumerate(corners):
        x, y = transform * (col + dc, rows + dr)
        xs[:, k], ys[:, k] = x, y
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs or CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_lonlat.transform(xs, ys)
    geod = _geod(crs)
    out = np.empty(rows.size)
    for i in range(rows.size):
        area, _ = geod.polygon_area_perimeter(lon[i], lat[i])
        out[i] = abs(area)
    return out

"""Streaming writers for polygon layers: RFC 7946 GeoJSON and GeoPackage.

Both take batches of features (GeoDataFrames in the raster's CRS) as they are
produced, so a layer never has to be held in memory whole. Neither manages the
final file name: callers write to a temporary from :func:`agriseg.atomic.atomic_output`
(or :func:`geopackage_output`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import mapping

from agriseg.atomic import atomic_output

#: Decimal places of GeoJSON coordinates: 1e-7° is about 1 cm on the ground.
GEOJSON_DECIMALS = 7


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_rfc7946(geometry: np.ndarray, crs: CRS) -> np.ndarray:
    """Geometries as RFC 7946 wants them: WGS84 lon/lat, rounded, exteriors counter-clockwise.

    Coordinates are snapped to a ``1e-7``° grid with GEOS precision reduction, which
    keeps every geometry valid (a sliver narrower than the grid collapses rather
    than self-intersects; a polygon smaller than it becomes empty).
    """
    to_wgs84 = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lonlat = shapely.transform(
        geometry, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))
    )
    snapped = shapely.set_precision(lonlat, 10.0**-GEOJSON_DECIMALS)
    oriented = shapely.orient_polygons(snapped, exterior_cw=False)
    # Print the grid values exactly (set_precision leaves them a few ulps off).
    return shapely.transform(oriented, lambda xy: np.round(xy, GEOJSON_DECIMALS))


@contextlib.contextmanager
def geopackage_output(final: Path) -> Iterator[Path]:
    """:func:`~agriseg.atomic.atomic_output` for a GeoPackage.

    The temporary keeps a ``.gpkg`` extension, which GDAL wants of a GeoPackage.
    """
    with atomic_output(final) as tmp:
        work = tmp.with_name(tmp.name + ".gpkg")
        try:
            yield work
            os.replace(work, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                work.unlink()


class GeoJSONWriter:
    """Writes a FeatureCollection feature by feature (RFC 7946: WGS84, CCW, 7 decimals).

    Features whose geometry vanishes at 1 cm precision are left out.

    Args:
        path: File to write.
        crs: CRS of the geometries passed to :meth:`write`.
    """

    def __init__(self, path: Path, crs: CRS) -> None:
        self._path = path
        self._crs = crs
        self._fh: IO[str] | None = None
        self._count = 0

    def __enter__(self) -> GeoJSONWriter:
        self._fh = open(self._path, "w", encoding="utf-8")
        self._fh.write('{"type": "FeatureCollection", "features": [')
        return self

    def write(self, frame: gpd.GeoDataFrame) -> None:
        """Append the rows of ``frame`` as features."""
        assert self._fh is not None, "use GeoJSONWriter as a context manager"
        if frame.empty:
            return
        geometry = to_rfc7946(frame.geometry.to_numpy(), self._crs)
        records = frame.drop(columns=frame.geometry.name).to_dict("records")
        for geom, props in zip(geometry, records, strict=True):
            if geom is None or geom.is_empty:
                continue
            feature = {
                "type": "Feature",
                "properties": {k: _json_value(v) for k, v in props.items()},
                "geometry": mapping(geom),
            }
            self._fh.write(",\n" if self._count else "\n")
            self._fh.write(json.dumps(feature, allow_nan=False, separators=(",", ":")))
            self._count += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._fh is not None
        try:
            if exc_type is None:
                self._fh.write("\n]}\n")
        finally:
            self._fh.close()


class GpkgLayerWriter:
    """Appends batches to one GeoPackage layer; creates it (empty if need be) on close.

    Args:
        path: GeoPackage file (created on the first write, other layers kept).
        layer: Layer name.
        template: Empty frame giving the layer's columns, dtypes and CRS.
    """

    def __init__(self, path: Path, layer: str, template: gpd.GeoDataFrame) -> None:
        self._path = path
        self._layer = layer
        self._template = template
        self._created = False

    def __enter__(self) -> GpkgLayerWriter:
        return self

    def write(self, frame: gpd.GeoDataFrame) -> None:
        """Append the rows of ``frame`` (same columns as the template)."""
        if frame.empty:
            return
        pyogrio.write_dataframe(
            frame,
            self._path,
            layer=self._layer,
            driver="GPKG",
            geometry_type="Polygon",
            append=self._created,
        )
        self._created = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._created:
            pyogrio.write_dataframe(
                self._template,
                self._path,
                layer=self._layer,
                driver="GPKG",
                geometry_type="Polygon",
            )
            self._created = True

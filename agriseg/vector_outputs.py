"""Streaming writers for polygon layers: RFC 7946 GeoJSON, GeoPackage and FlatGeobuf.

They take batches of features (GeoDataFrames in the raster's CRS) as they are
produced, so a layer never has to be held in memory whole (FlatGeobuf: at most
:data:`FLATGEOBUF_GROUP` features). None manages the final file name: callers write
to a temporary from :func:`agriseg.atomic.atomic_output` (or :func:`geopackage_output`).
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
import pandas as pd
import pyogrio
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from agriseg.atomic import atomic_output

#: Decimal places of GeoJSON coordinates: 1e-7° is about 1 cm on the ground.
GEOJSON_DECIMALS = 7


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Features converted to text at a time.
WRITE_SLICE = 2000

#: Features written to a FlatGeobuf file at a time. GDAL rewrites the whole file (to
#: rebuild its packed Hilbert R-tree) on every append, so appends are grouped: at
#: 8,000 features a 1,000-feature append took 4 times as long as the first.
FLATGEOBUF_GROUP = 100_000

#: OGR driver of each vector format agriseg writes.
OGR_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}

#: Largest distance (degrees) a vertex moves when rounded to the GeoJSON grid.
_ROUNDING_SHIFT = math.sqrt(2) * 0.5 * 10.0**-GEOJSON_DECIMALS


def _column_json(values: pd.Series) -> list[str]:
    """Each value of a column as the JSON text ``json.dumps`` gives it (NaN, inf: null).

    Column by column rather than a ``json.dumps`` per feature: a fifth of the time, and
    the same text (Python's float and int reprs are JSON's)."""
    items = values.tolist()
    # NumPy dtypes only: pandas' nullable ones (Int64, boolean...) may hold pd.NA,
    # which json.dumps refuses, as it did row by row.
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else "O"
    if kind == "b":
        return ["true" if v else "false" for v in items]
    if kind in "iu":
        return [str(v) for v in items]
    if kind == "f":
        return [repr(v) if math.isfinite(v) else "null" for v in items]
    return [json.dumps(_json_value(v), allow_nan=False) for v in items]


def features_json(properties: pd.DataFrame, geometry_json: np.ndarray) -> list[str]:
    """GeoJSON Feature text of each row: its ``properties`` as a compact JSON object (in
    column order, as ``json.dumps(..., separators=(",", ":"))`` writes it) and its
    geometry's GeoJSON text."""
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


@contextlib.contextmanager
def geopackage_output(final: Path) -> Iterator[Path]:
    """:func:`~agriseg.atomic.atomic_output` for a GeoPackage or a FlatGeobuf file.

    The temporary keeps the final name's extension, which GDAL wants of a GeoPackage
    (and without which it makes a FlatGeobuf file a folder).
    """
    with atomic_output(final) as tmp:
        work = tmp.with_name(tmp.name + final.suffix)
        try:
            yield work
            os.replace(work, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                work.unlink()


class GeoJSONWriter:
    """Writes a FeatureCollection feature by feature (RFC 7946: WGS84, CCW, 7 decimals).

    Features whose geometry vanishes at 1 cm precision are left out, and so are those
    that cannot be projected to WGS84 (see :func:`to_rfc7946`; counted in
    :attr:`unprojectable`).

    Args:
        path: File to write.
        crs: CRS of the geometries passed to :meth:`write`.
        snap_safely: Snap to the 1 cm grid with GEOS precision reduction (always
            valid) rather than plain rounding (see :func:`to_rfc7946`).
    """

    def __init__(self, path: Path, crs: CRS, *, snap_safely: bool = True) -> None:
        self._path = path
        self._crs = crs
        self._snap_safely = snap_safely
        self._fh: IO[str] | None = None
        self._count = 0
        #: Features left out because they cannot be projected to WGS84.
        self.unprojectable = 0

    def __enter__(self) -> GeoJSONWriter:
        self._fh = open(self._path, "w", encoding="utf-8")
        self._fh.write('{"type": "FeatureCollection", "features": [')
        return self

    def write(self, frame: gpd.GeoDataFrame) -> None:
        """Append the rows of ``frame`` as features (a slice at a time: bounded memory)."""
        for start in range(0, len(frame), WRITE_SLICE):
            self._write_slice(frame.iloc[start : start + WRITE_SLICE])

    def _write_slice(self, frame: gpd.GeoDataFrame) -> None:
        assert self._fh is not None, "use GeoJSONWriter as a context manager"
        source = frame.geometry.to_numpy()
        geometry = to_rfc7946(source, self._crs, snap_safely=self._snap_safely)
        missing = shapely.is_missing(geometry)
        self.unprojectable += int((missing & ~shapely.is_missing(source)).sum())
        keep = ~(missing | shapely.is_empty(geometry))
        if not keep.any():
            return
        properties = frame.drop(columns=frame.geometry.name)[keep]
        features = features_json(properties, shapely.to_geojson(geometry[keep]))
        self._fh.write((",\n" if self._count else "\n") + ",\n".join(features))
        self._count += len(features)

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


class LayerWriter:
    """Appends batches to one layer of an OGR file; creates it (empty if need be) on close.

    Args:
        path: The file (created on the first write; other GeoPackage layers kept).
        layer: Layer name.
        template: Empty frame giving the layer's columns, dtypes and CRS.
        driver: ``GPKG`` or ``FlatGeobuf`` (which gets a spatial index; its batches
            are grouped by :data:`FLATGEOBUF_GROUP` features).
    """

    def __init__(
        self, path: Path, layer: str, template: gpd.GeoDataFrame, driver: str = "GPKG"
    ) -> None:
        self._path = path
        self._layer = layer
        self._template = template
        self._driver = driver
        self._group = FLATGEOBUF_GROUP if driver == "FlatGeobuf" else 1
        self._pending: list[gpd.GeoDataFrame] = []
        self._pending_rows = 0
        self._created = False

    def __enter__(self) -> LayerWriter:
        return self

    def write(self, frame: gpd.GeoDataFrame) -> None:
        """Append the rows of ``frame`` (same columns as the template)."""
        if frame.empty:
            return
        self._pending.append(frame)
        self._pending_rows += len(frame)
        if self._pending_rows >= self._group:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        frame = self._pending[0] if len(self._pending) == 1 else pd.concat(self._pending)
        self._pending, self._pending_rows = [], 0
        self._append(frame)

    def _append(self, frame: gpd.GeoDataFrame) -> None:
        pyogrio.write_dataframe(
            frame,
            self._path,
            layer=self._layer,
            driver=self._driver,
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
        if exc_type is None:
            self._flush()
            if not self._created:
                self._append(self._template)

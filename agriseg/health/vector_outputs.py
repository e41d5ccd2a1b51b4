"""Streaming writers for polygon layers: RFC 7946 GeoJSON, GeoPackage and FlatGeobuf.

GeoPackage layers are written with :func:`agriseg.io.geopackage.write_layer` (version 1.2).

They take batches of features (GeoDataFrames in the raster's CRS) as they are
produced, so a layer never has to be held in memory whole (FlatGeobuf: at most
:data:`FLATGEOBUF_GROUP` features). None manages the final file name: callers write
to a temporary from :func:`agriseg.io.atomic.atomic_output` (or :func:`geopackage_output`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from agriseg.health.geojson import FeatureSlice, FeatureText
from agriseg.io.atomic import atomic_output
from agriseg.io.geopackage import write_layer

#: Features converted to text at a time.
WRITE_SLICE = 2000

#: Features written to a FlatGeobuf file at a time. GDAL rewrites the whole file (to
#: rebuild its packed Hilbert R-tree) on every append, so appends are grouped: at
#: 8,000 features a 1,000-feature append took 4 times as long as the first.
FLATGEOBUF_GROUP = 100_000

#: OGR driver of each vector format agriseg writes.
OGR_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}


@contextlib.contextmanager
def geopackage_output(final: Path) -> Iterator[Path]:
    """:func:`~agriseg.io.atomic.atomic_output` for a GeoPackage or a FlatGeobuf file.

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
    that cannot be projected to WGS84 (see :func:`~agriseg.health.geojson.to_rfc7946`;
    counted in :attr:`unprojectable`). :meth:`write` makes the text of a frame here;
    :meth:`encoders` and :meth:`write_text` let it be made elsewhere (a worker process)
    and written here in order.

    Args:
        path: File to write.
        crs: CRS of the geometries passed to :meth:`write`.
        snap_safely: Snap to the 1 cm grid with GEOS precision reduction (always
            valid) rather than plain rounding (see :func:`~agriseg.health.geojson.to_rfc7946`).
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
        for encode in self.encoders(frame):
            self.write_text(encode())

    def encoders(
        self, frame: gpd.GeoDataFrame, parallel: int = 1
    ) -> list[Callable[[], FeatureText]]:
        """Functions (picklable) that make the text of ``frame``'s rows, a slice of at
        most :data:`WRITE_SLICE` rows each, in a multiple of ``parallel`` slices of
        about equal size (as many as rows allow); pass their results to
        :meth:`write_text` in order."""
        geometry = frame.geometry.to_numpy()
        columns = {
            str(name): frame[name].to_numpy()
            for name in frame.columns
            if name != frame.geometry.name
        }
        slices = math.ceil(math.ceil(len(frame) / WRITE_SLICE) / parallel) * parallel
        size = max(1, math.ceil(len(frame) / slices)) if slices else 1
        found: list[Callable[[], FeatureText]] = []
        for start in range(0, len(frame), size):
            part = slice(start, start + size)
            properties = {name: values[part] for name, values in columns.items()}
            found.append(FeatureSlice(geometry[part], properties, self._crs, self._snap_safely))
        return found

    def write_text(self, features: FeatureText) -> None:
        """Append features made by one of :meth:`encoders`' functions."""
        assert self._fh is not None, "use GeoJSONWriter as a context manager"
        self.unprojectable += features.unprojectable
        if not features.count:
            return
        self._fh.write((",\n" if self._count else "\n") + features.text)
        self._count += features.count

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
        write_layer(
            frame,
            self._path,
            self._layer,
            self._driver,
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

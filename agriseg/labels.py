"""Ground-truth labels on an image's pixel grid, from a class raster or a vector file.

A class raster holds class ids (``255`` or its nodata value: unlabelled); a vector
file (GeoPackage, Shapefile, GeoJSON...) holds polygons with a class-name (or id)
attribute and is rasterised onto the image grid, after reprojection to the image
CRS. Either is read window by window, so labels of any size fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio import features, windows
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box

from agriseg.classes import CLASS_NAMES, CLASSES, NODATA
from agriseg.errors import InputError, RasterReadError

#: File suffixes read as vector labels; anything else is opened as a raster.
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")

LabelKind = Literal["raster", "vector"]


@dataclass(frozen=True)
class Grid:
    """The pixel grid labels are read on: an image's size, transform and CRS."""

    height: int
    width: int
    transform: Affine
    crs: CRS


def label_kind(path: Path) -> LabelKind:
    return "vector" if Path(path).suffix.lower() in VECTOR_SUFFIXES else "raster"


def _class_ids(values: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Map class names (any case) or integer ids in ``column`` to class ids."""
    by_name = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    valid_ids = {c.id for c in CLASSES}
    ids = np.empty(len(values), dtype="uint8")
    bad: set[str] = set()
    for n, value in enumerate(values):
        key = str(value).strip().lower()
        if key in by_name:
            ids[n] = by_name[key]
        elif key.isdigit() and int(key) in valid_ids:
            ids[n] = int(key)
        else:
            bad.add(str(value))
    if bad:
        raise InputError(
            f"{path}: column {column!r} has unknown class value(s) {sorted(bad)[:10]}; "
            f"expected one of {', '.join(CLASS_NAMES)} (or ids 0-{len(CLASSES) - 1})"
        )
    return ids


class Labels:
    """Labels of one image, readable by window as uint8 class ids (255: unlabelled)."""

    def __init__(
        self, path: Path | str, grid: Grid, column: str = "class", layer: str | None = None
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.kind: LabelKind = label_kind(self.path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such label file; check --labels")
        self._frame: gpd.GeoDataFrame | None = None
        if self.kind == "vector":
            self._frame = self._read_vector(column, layer)
        else:
            self._check_raster()

    def _read_vector(self, column: str, layer: str | None) -> gpd.GeoDataFrame:
        try:
            frame = gpd.read_file(self.path, layer=layer)
        except Exception as exc:  # pyogrio raises several unrelated types for bad files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"{self.path}: not a readable vector file ({reason}); "
                "give a GeoPackage, Shapefile or GeoJSON"
            ) from None
        if column not in frame.columns:
            columns = [c for c in frame.columns if c != frame.geometry.name]
            raise InputError(
                f"{self.path}: has no column {column!r} (columns: {', '.join(columns)}); "
                "name the class column with --label-column"
            )
        if frame.crs is None:
            raise InputError(
                f"{self.path}: vector labels have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX)"
            )
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        frame = frame.to_crs(self.grid.crs)
        ids = _class_ids(frame[column].to_numpy(), self.path, column)
        return gpd.GeoDataFrame({"class_id": ids}, geometry=frame.geometry.values, crs=frame.crs)

    def _open_raster(self) -> rasterio.DatasetReader:
        try:
            return rasterio.open(self.path)
        except RasterioIOError as exc:
            raise RasterReadError(
                f"{self.path}: not a readable label raster ({str(exc).splitlines()[0]})"
            ) from None

    def _check_raster(self) -> None:
        with self._open_raster() as src:
            if src.crs is None:
                raise InputError(f"{self.path}: label raster has no CRS; georeference it")

    def _aligned(self, src: rasterio.DatasetReader) -> bool:
        g = self.grid
        return (
            (src.height, src.width) == (g.height, g.width)
            and src.transform.almost_equals(g.transform)
            and src.crs == g.crs
        )

    def read(self, window: Window) -> np.ndarray:
        """Class ids ``(h, w)`` uint8 of ``window`` of the image grid; 255 where unlabelled."""
        h, w = int(window.height), int(window.width)
        transform = windows.transform(window, self.grid.transform)
        if self._frame is not None:
            bounds = windows.bounds(window, self.grid.transform)
            hits = self._frame.iloc[self._frame.sindex.query(box(*bounds))]
            if hits.empty:
                return np.full((h, w), NODATA, dtype="uint8")
            return features.rasterize(
                zip(hits.geometry.values, hits["class_id"].to_numpy(), strict=True),
                out_shape=(h, w),
                transform=transform,
                fill=NODATA,
                dtype="uint8",
            )
        with self._open_raster() as src:
            if self._aligned(src):
                data = src.read(1, window=window, masked=True)
            else:
                with WarpedVRT(
                    src,
                    crs=self.grid.crs,
                    transform=self.grid.transform,
                    height=self.grid.height,
                    width=self.grid.width,
                    resampling=Resampling.nearest,
                ) as vrt:
                    data = vrt.read(1, window=window, masked=True)
        out = np.where(np.ma.getmaskarray(data), NODATA, data.filled(NODATA)).astype("int64")
        bad = np.unique(out[(out != NODATA) & ((out < 0) | (out >= len(CLASSES)))])
        if bad.size:
            raise InputError(
                f"{self.path}: label raster holds value(s) {bad[:10].tolist()}; expected class "
                f"ids 0-{len(CLASSES) - 1} ({', '.join(CLASS_NAMES)}) or {NODATA} for unlabelled"
            )
        return out.astype("uint8")

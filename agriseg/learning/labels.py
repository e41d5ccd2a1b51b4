"""Ground-truth labels on an image's pixel grid, from a class raster, mask or vector file.

Labels are mapped onto a model's :class:`~agriseg.classes.ClassList`. A class raster
holds class ids (``255`` or its nodata value: unlabelled); when it names its classes
in ``class_N`` tags, they are matched to the model's classes by name. A vector file
(GeoPackage, Shapefile, GeoJSON...) holds polygons with a class-name (or id)
attribute and is rasterised onto the image grid, after reprojection to the image
CRS. A plain image (no CRS) takes a mask of the same size: ids, or colours decoded
by a label-colour table (see :mod:`agriseg.learning.datasets`). Labels are read window by
window, so labels of any size fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features, windows
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box

from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList, guess_role
from agriseg.errors import InputError, RasterReadError
from agriseg.io.grid import Grid
from agriseg.io.raster import georeferenced, open_dataset
from agriseg.learning.datasets import LabelColors, color_ids, decode_colors

#: File suffixes read as vector labels; anything else is opened as a raster.
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")

LabelKind = Literal["raster", "vector"]


def label_kind(path: Path) -> LabelKind:
    return "vector" if Path(path).suffix.lower() in VECTOR_SUFFIXES else "raster"


def class_ids(values: np.ndarray, classes: ClassList, path: Path, what: str) -> np.ndarray:
    """Map class names (any case) or integer ids to ids of ``classes``; the error lists
    the unknown values and the valid names."""
    by_name = {name.lower(): i for i, name in enumerate(classes.names)}
    ids = np.empty(len(values), dtype="uint8")
    bad: set[str] = set()
    for n, value in enumerate(values):
        key = str(value).strip().lower()
        if key in by_name:
            ids[n] = by_name[key]
        elif key.isdigit() and int(key) < len(classes):
            ids[n] = int(key)
        else:
            bad.add(str(value))
    if bad:
        raise InputError(
            f"{path}: {what} has unknown class value(s) {sorted(bad)[:10]}; the model's "
            f"classes are {', '.join(classes.names)} (or ids 0-{len(classes) - 1}); "
            "fix the labels or give --classes"
        )
    return ids


class Labels:
    """Labels of one image, readable by window as uint8 ids of ``classes`` (255: unlabelled).

    ``colors`` decodes colour-coded (RGB) masks; without it a label raster holds ids.
    """

    def __init__(
        self,
        path: Path | str,
        grid: Grid,
        classes: ClassList,
        column: str = "class",
        layer: str | None = None,
        colors: LabelColors | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.classes = classes
        self.colors = color_ids(colors, classes) if colors else {}
        self.kind: LabelKind = label_kind(self.path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such label file; check --labels")
        self._frame: gpd.GeoDataFrame | None = None
        self._lookup: np.ndarray | None = None
        if self.kind == "vector":
            if grid.crs is None:
                raise InputError(
                    f"{self.path}: vector labels need a georeferenced image; give a mask "
                    "image of the same size for plain images"
                )
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
        ids = class_ids(frame[column].to_numpy(), self.classes, self.path, f"column {column!r}")
        return gpd.GeoDataFrame({"class_id": ids}, geometry=frame.geometry.values, crs=frame.crs)

    def _open_raster(self) -> rasterio.DatasetReader:
        try:
            return open_dataset(self.path)
        except RasterioIOError as exc:
            raise RasterReadError(
                f"{self.path}: not a readable label raster ({str(exc).splitlines()[0]})"
            ) from None

    def _check_raster(self) -> None:
        g = self.grid
        with self._open_raster() as src:
            if g.crs is None or not georeferenced(src):
                if (src.height, src.width) != (g.height, g.width):
                    raise InputError(
                        f"{self.path}: mask is {src.width}x{src.height} px but its image is "
                        f"{g.width}x{g.height}; a mask must match its image pixel for pixel"
                    )
            elif src.crs is None:
                raise InputError(f"{self.path}: label raster has no CRS; georeference it")
            if self.colors:
                if src.count < 3 and src.colorinterp[0] != ColorInterp.palette:
                    raise InputError(
                        f"{self.path}: --label-colors decodes RGB or palette masks but this "
                        f"one has {src.count} grey band(s); drop --label-colors for masks of "
                        "class ids"
                    )
                return
            _refuse_colours(src)
            tags = src.tags()
        named = ClassList.from_tags(tags)
        if named is not None and named.names != self.classes.names:
            # Ids of a raster naming its classes are matched to the model's by name.
            ids = class_ids(np.array(named.names), self.classes, self.path, "class_N tags")
            self._lookup = np.full(256, NODATA, dtype="uint8")
            self._lookup[: len(ids)] = ids

    def _aligned(self, src: rasterio.DatasetReader) -> bool:
        g = self.grid
        if g.crs is None or not georeferenced(src):
            return True  # sizes were checked: a plain mask lies on its image's pixels
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
            if self.colors:
                if not self._aligned(src):
                    raise InputError(
                        f"{self.path}: a colour-coded mask must lie on its image's pixel grid; "
                        "export it with the image's size and georeferencing"
                    )
                return decode_colors(_rgb(src, window), self.colors, self.path)
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
        n = len(self.classes) if self._lookup is None else int((self._lookup != NODATA).sum())
        bad = np.unique(out[(out != NODATA) & ((out < 0) | (out >= n))])
        if bad.size:
            raise InputError(
                f"{self.path}: label raster holds value(s) {bad[:10].tolist()}; expected class "
                f"ids 0-{n - 1} ({', '.join(self.classes.names)}) or {NODATA} for unlabelled"
            )
        if self._lookup is not None:
            return self._lookup[out]
        return out.astype("uint8")


def _refuse_colours(src: rasterio.DatasetReader) -> None:
    """Colour-coded masks need a label-colour table to become class ids."""
    if src.count >= 3 and src.colorinterp[0] != ColorInterp.palette:
        raise InputError(
            f"{src.name}: mask has {src.count} bands (colours?); give --label-colors, "
            "e.g. 'crop=#00ff00,weed=#ff0000,soil=#000000', or a mask of class ids"
        )


def _rgb(src: rasterio.DatasetReader, window: Window) -> np.ndarray:
    """``(3, h, w)`` colours of ``window`` of an RGB(A) or palette mask."""
    if src.count >= 3:
        return src.read((1, 2, 3), window=window)
    lut = np.zeros((256, 3), dtype="uint8")
    for k, entry in src.colormap(1).items():
        lut[k] = entry[:3]
    return np.moveaxis(lut[src.read(1, window=window)], -1, 0)


def label_classes(
    paths: Sequence[Path], column: str = "class", colors: LabelColors | None = None
) -> ClassList:
    """The classes that labels name, for a model trained without ``--classes``.

    * colour-coded masks: the names of the label-colour table, in its order, with its
      colours;
    * vector labels: the distinct names of ``column``, sorted, background names
      (soil, ground...) first;
    * class rasters and masks: their ``class_N`` tags, else ids ``0..max`` named
      ``class_0``, ``class_1``... with role ``other``.

    Names that are all default class names (soil, crop, weed, diseased), and ids up to
    3, give :data:`DEFAULT_CLASSES`, so such labels train a model like the shipped ones.
    """
    if colors:
        names = list(colors)
        if _all_default(names):
            return DEFAULT_CLASSES
        return ClassList.build(names, dict(colors))
    values: set[str] = set()
    tagged: list[tuple[Path, ClassList]] = []
    top = -1
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such label file; check --labels")
        if label_kind(path) == "vector":
            try:
                frame = gpd.read_file(path, columns=[column], ignore_geometry=True)
            except Exception:  # unreadable or missing column: Labels says which, later
                continue
            if column in frame.columns:
                values |= {str(v).strip() for v in frame[column].dropna().unique()}
            continue
        with open_dataset(path) as src:
            named = ClassList.from_tags(src.tags())
            if named is not None:
                tagged.append((path, named))
                continue
            _refuse_colours(src)
            data = src.read(1, masked=True)
        found = data.compressed()
        found = found[found != NODATA]
        if found.size:
            top = max(top, int(found.max()))
    ids = {v for v in values if v.isdigit()}
    # One class per name whatever its case (labels match names in any case).
    names = sorted({n.lower(): n for n in sorted(values - ids)}.values(), key=str.lower)
    top = max([top, *(int(v) for v in ids)])
    if tagged:
        first_path, first = tagged[0]
        for path, other in tagged[1:]:
            if other.names != first.names:
                raise InputError(
                    f"{path} names classes {', '.join(other.names)} but {first_path} "
                    f"{', '.join(first.names)}; give --classes"
                )
        if not names and top < len(first):
            return first
        raise InputError(
            f"{first_path}: labels mix class rasters naming {', '.join(first.names)} with "
            "other names or ids; give --classes"
        )
    if names:
        if top >= 0 and not (_all_default(names) and top < len(DEFAULT_CLASSES)):
            raise InputError(
                f"labels mix class names ({', '.join(names[:10])}) with ids; give --classes"
            )
        if _all_default(names):
            return DEFAULT_CLASSES
        background = [n for n in names if guess_role(n) == "background"]
        return ClassList.build(background + [n for n in names if n not in background])
    if top < 0:
        raise InputError(
            f"{', '.join(map(str, paths[:3]))}: no labelled pixel or class name found; "
            "check --labels and --label-column"
        )
    if top < len(DEFAULT_CLASSES):
        return DEFAULT_CLASSES
    generic = [f"class_{k}" for k in range(top + 1)]
    return ClassList.build(generic, roles=dict.fromkeys(generic, "other"))


def _all_default(names: Sequence[str]) -> bool:
    return all(n.lower() in DEFAULT_CLASSES.names for n in names)

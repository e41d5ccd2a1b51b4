"""Class raster → polygons: block-wise sieving, polygonising and seam merging.

Everything here streams over strips of rows cut into blocks of ``block_size``
pixels, so memory is bounded by one strip plus the parts of regions still open
across the seam below it, not by the raster. Parts cut by seams are matched by
pixel adjacency and unioned once per region; a region spanning the whole raster
(the soil between crop rows, say) is one polygon, so its size grows with the raster.

Polygons are built in pixel coordinates, where every vertex is an integer and
unions along block seams are exact, and moved to the raster's CRS only when
finished. Same-class regions are 4-connected (pixels touching only at a corner
are separate polygons), so no two same-class polygons ever share an edge.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes, sieve
from rasterio.windows import Window
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from agriseg.classes import NODATA
from agriseg.health.strips import FileStrip, Strip, file_strips
from agriseg.io.raster import READ_ENV

#: Polygons built from GDAL's shapes at a time (bounds their Python coordinate lists).
SHAPES_SLICE = 2048

#: Polygons simplified together; edges shared with polygons outside a group stay exact.
SIMPLIFY_GROUP = 50_000


@dataclass(frozen=True)
class PolygonBatch:
    """Class polygons with the pixel statistics they were built from.

    Attributes:
        geometry: Shapely polygons (object array).
        class_id: Class id of each polygon (uint8).
        pixels: Number of pixels inside each polygon.
        confidence_sum: Sum of the confidence values (0–100) of its pixels.
        confidence_count: Number of its pixels that have a confidence value.
        value_sum: ``(n, k)`` sums of ``k`` per-pixel values (vegetation indices) over
            its pixels that have one.
        value_count: ``(n, k)`` number of its pixels that have each value.
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    confidence_sum: np.ndarray
    confidence_count: np.ndarray
    value_sum: np.ndarray
    value_count: np.ndarray

    def __len__(self) -> int:
        return len(self.geometry)

    @classmethod
    def empty(cls, n_values: int = 0) -> PolygonBatch:
        return cls(
            np.empty(0, dtype=object),
            np.empty(0, dtype="uint8"),
            np.empty(0, dtype="int64"),
            np.empty(0, dtype="float64"),
            np.empty(0, dtype="int64"),
            np.empty((0, n_values), dtype="float64"),
            np.empty((0, n_values), dtype="int64"),
        )

    @classmethod
    def concat(cls, batches: Iterable[PolygonBatch]) -> PolygonBatch:
        batches = list(batches)
        parts = [b for b in batches if len(b)]
        if not parts:
            return cls.empty(batches[0].value_sum.shape[1] if batches else 0)
        return cls(*(np.concatenate([getattr(b, name) for b in parts]) for name in _COLUMNS))

    def take(self, index: np.ndarray) -> PolygonBatch:
        """The polygons selected by a boolean mask or index array."""
        return PolygonBatch(*(getattr(self, name)[index] for name in _COLUMNS))

    def with_geometry(self, geometry: np.ndarray) -> PolygonBatch:
        return PolygonBatch(geometry, *(getattr(self, name) for name in _COLUMNS[1:]))

    @property
    def mean_confidence(self) -> np.ndarray:
        """Mean confidence per polygon; NaN where none of its pixels has one."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.confidence_count > 0, self.confidence_sum / self.confidence_count, np.nan
            )

    @property
    def mean_values(self) -> np.ndarray:
        """``(n, k)`` mean of each per-pixel value; NaN where none of its pixels has one."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.value_count > 0, self.value_sum / self.value_count, np.nan)

    def __reduce__(self) -> tuple[type[PolygonBatch], tuple[Any, ...]]:
        # Blocks travel back from worker processes: see PicklePolygons.
        columns = (getattr(self, name) for name in _COLUMNS[1:])
        return PolygonBatch, (PicklePolygons(self.geometry), *columns)


class PicklePolygons:
    """An array of shapely polygons to pickle; unpickles as the array itself.

    Pickled as shapely's ragged coordinate arrays when every element is a non-empty
    polygon: for 2,000 field polygons 4 x quicker to pickle and 5 x to unpickle than
    shapely's geometry-by-geometry pickling (same coordinates, bit for bit); any other
    array as it is.
    """

    def __init__(self, geometry: np.ndarray) -> None:
        self.geometry = geometry

    def __reduce__(self) -> tuple[Callable[..., np.ndarray], tuple[Any, ...]]:
        g = self.geometry
        polygons = len(g) and (shapely.get_type_id(g) == shapely.GeometryType.POLYGON).all()
        if polygons and not shapely.is_empty(g).any():
            return shapely.from_ragged_array, shapely.to_ragged_array(g)
        return np.asarray, (g,)


#: PolygonBatch's fields, geometry first.
_COLUMNS = (
    "geometry",
    "class_id",
    "pixels",
    "confidence_sum",
    "confidence_count",
    "value_sum",
    "value_count",
)

#: Per-pixel values of a window of the raster, ``(k, h, w)`` float, NaN where undefined.
ValueReader = Callable[[Window], np.ndarray]


_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def blocks(height: int, width: int, block_size: int) -> Iterator[list[Window]]:
    """Windows of at most ``block_size`` px tiling the raster, one list per block row."""
    for row in range(0, height, block_size):
        h = min(block_size, height - row)
        yield [
            Window(col, row, min(block_size, width - col), h) for col in range(0, width, block_size)
        ]


def sieve_size(min_area_m2: float, pixel_area_m2: float) -> int:
    """Pixels in the smallest region kept for a minimum mapping unit of ``min_area_m2``."""
    if min_area_m2 <= 0 or pixel_area_m2 <= 0:
        return 0
    return math.ceil(min_area_m2 / pixel_area_m2 - 1e-9)


def sieve_halo(size: int, block_size: int) -> int:
    """Context in pixels each sieved block is given (see :func:`sieve_strip`): none
    without sieving (``size <= 1``)."""
    return max(0, min(size, block_size // 2)) if size > 1 else 0


def sieve_strip(strip: Strip, size: int, block_size: int) -> np.ndarray:
    """The strip's own rows with regions smaller than ``size`` px merged away.

    The strip is cut into blocks of ``block_size`` columns; each block is sieved
    with a halo of ``min(size, block_size // 2)`` px of context (rows from the strip's
    context, columns from its neighbours) and only its core kept. Whether a region
    is small is then decided exactly whenever ``size <= block_size // 2`` (a region
    of fewer than ``size`` px never reaches further than the halo, and a larger one
    crossing the window edge shows at least ``halo`` px of itself); the neighbour a
    small region merges into is chosen from neighbour sizes as seen in the window,
    which can differ from a whole-raster sieve when the neighbours run out of the
    window. Nodata pixels are never changed and never absorb a region; regions
    surrounded only by nodata stay.
    """
    if size <= 1:
        return strip.core
    return np.concatenate([task.sieved() for task in block_tasks(strip, size, block_size)], axis=1)


def _sieve_window(data: np.ndarray, size: int) -> np.ndarray:
    valid = data != NODATA
    # GDAL refuses a sieve threshold as large as the whole window.
    if 1 < size < data.size and valid.any():
        return sieve(data, size, mask=valid, connectivity=4)
    return data


def sieve_raster(src_path: Path, dst_path: Path, size: int, block_size: int = 2048) -> None:
    """Write a copy of a class raster with regions smaller than ``size`` px merged away.

    Blocks of ``block_size`` px are sieved with context around them: see
    :func:`sieve_strip`.

    Args:
        src_path: Class raster (uint8, nodata 255).
        dst_path: Where to write the sieved copy (same profile).
        size: Minimum region size in pixels (4-connected); ``<= 1`` copies unchanged.
        block_size: Edge of the processing blocks in pixels.
    """
    # Imported here: it loads Dask distributed, which the health pass's worker
    # processes (they import this module for run_block) would wait a second for.
    from agriseg.io.gdal_settings import run_settings

    with (
        run_settings(),
        rasterio.open(src_path) as src,
        rasterio.open(dst_path, "w", **src.profile) as dst,
    ):
        with contextlib.suppress(ValueError):
            dst.write_colormap(1, src.colormap(1))
        dst.update_tags(**src.tags())
        for strip in file_strips(src_path, None, block_size, sieve_halo(size, block_size)):
            window = Window(0, strip.row_off, src.width, strip.height)
            dst.write(sieve_strip(strip, size, block_size), 1, window=window)


@dataclass(frozen=True)
class BlockTask:
    """The pixels one block of a strip needs: its classes with sieving context around them.

    A unit of the health pass's parallel work (:func:`run_block`): everything in it is
    plain arrays and numbers, so it travels to a worker process as it is.

    Attributes:
        classes: Class ids of the block's window grown by the sieving halo (clipped to
            the strip's context rows and the raster's columns).
        top: Context rows above the block in ``classes``.
        left: Context columns left of the block in ``classes``.
        window: The block in the raster.
        confidence: Confidence (0–100, nodata 255) of the block, or None.
        sieve_px: Regions smaller than this are merged away (``<= 1``: none).
    """

    classes: np.ndarray
    top: int
    left: int
    window: Window
    confidence: np.ndarray | None
    sieve_px: int

    def sieved(self) -> np.ndarray:
        """The block's class ids, sieved with its context (see :func:`sieve_strip`)."""
        data = _sieve_window(np.ascontiguousarray(self.classes), self.sieve_px)
        h, w = int(self.window.height), int(self.window.width)
        return data[self.top : self.top + h, self.left : self.left + w]


@dataclass(frozen=True)
class FileBlockTask:
    """A block of finished class and confidence raster files that the process running it
    reads itself (:meth:`read`): it travels as paths and numbers, not pixels.

    Attributes:
        classes_path: The class raster.
        confidence_path: Its confidence raster, or None.
        window: The block in the raster.
        halo: Sieving context around the block (clipped to the raster).
        sieve_px: Regions smaller than this are merged away (``<= 1``: none).
    """

    classes_path: Path
    confidence_path: Path | None
    window: Window
    halo: int
    sieve_px: int

    def read(self) -> BlockTask:
        """The :class:`BlockTask` of this block: what :func:`block_tasks` cuts from the
        block's strip read whole, pixel for pixel."""
        r0, c0 = int(self.window.row_off), int(self.window.col_off)
        r1, c1 = r0 + int(self.window.height), c0 + int(self.window.width)
        with contextlib.ExitStack() as stack:
            stack.enter_context(rasterio.Env(**READ_ENV))
            src = stack.enter_context(rasterio.open(self.classes_path))
            top, left = max(0, r0 - self.halo), max(0, c0 - self.halo)
            bottom, right = min(src.height, r1 + self.halo), min(src.width, c1 + self.halo)
            classes = src.read(1, window=Window(left, top, right - left, bottom - top))
            confidence = None
            if self.confidence_path is not None:
                confidence = stack.enter_context(rasterio.open(self.confidence_path)).read(
                    1, window=self.window
                )
        return BlockTask(classes, r0 - top, c0 - left, self.window, confidence, self.sieve_px)


def file_block_tasks(strip: FileStrip, sieve_px: int, block_size: int) -> list[FileBlockTask]:
    """:func:`block_tasks` of a strip not read yet: blocks their processes read."""
    halo = sieve_halo(sieve_px, block_size)
    return [
        FileBlockTask(
            strip.classes_path,
            strip.confidence_path,
            Window(col, strip.row_off, min(block_size, strip.width - col), strip.height),
            halo,
            sieve_px,
        )
        for col in range(0, strip.width, block_size)
    ]


def block_tasks(strip: Strip, sieve_px: int, block_size: int) -> list[BlockTask]:
    """The strip cut into blocks of ``block_size`` columns, each with its sieving halo."""
    halo = sieve_halo(sieve_px, block_size)
    rows = slice(
        max(0, strip.above - halo), min(len(strip.classes), strip.above + strip.height + halo)
    )
    width = strip.classes.shape[1]
    tasks = []
    for col in range(0, width, block_size):
        c1 = min(width, col + block_size)
        c0o, c1o = max(0, col - halo), min(width, c1 + halo)
        conf = strip.confidence[:, col:c1] if strip.confidence is not None else None
        tasks.append(
            BlockTask(
                strip.classes[rows, c0o:c1o],
                strip.above - rows.start,
                col - c0o,
                Window(col, strip.row_off, c1 - col, strip.height),
                conf,
                sieve_px,
            )
        )
    return tasks


@dataclass(frozen=True)
class PolygonSettings:
    """What a block's polygons are made of.

    Attributes:
        classes: Which class ids become polygons: a boolean per value 0–255 (nodata,
            255, never does); None: every class.
        values: Reads per-pixel values (vegetation indices) of a window, summed per
            polygon; None for none. Must pickle when blocks run in worker processes.
        n_values: Number of values ``values`` gives per pixel.
        keep_sieved: Whether a block returns its sieved class ids
            (:attr:`BlockPolygons.sieved`; they are 1 byte a pixel to send back).
        picks: The raster rows and columns (ascending) a decimated copy of the sieved
            raster takes (the preview's, see :func:`picked_pixels`); a block returns
            those in it (:attr:`BlockPolygons.picked`). None: none.
    """

    classes: np.ndarray | None = None
    values: ValueReader | None = None
    n_values: int = 0
    keep_sieved: bool = True
    picks: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class BlockPolygons:
    """One block, sieved and polygonised: what :class:`StripPolygons` joins across seams.

    Attributes:
        window: The block in the raster.
        sieved: The block's sieved class ids.
        polygons: Its polygons, in whole-raster pixel coordinates.
        top, bottom, left, right: The block's edge pixels labelled with their polygon's
            index plus one (0: no polygon).
        value_sum: Sum of each per-pixel value over all the block's valid pixels
            (vectorised or not) that have one.
        value_count: Number of those pixels, per value.
        class_counts: Pixels of each value 0-255 in the sieved block (255: nodata).
        picked: The sieved pixels at :attr:`PolygonSettings.picks` in the block.
    """

    window: Window
    sieved: np.ndarray | None
    polygons: PolygonBatch
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value_sum: np.ndarray
    value_count: np.ndarray
    class_counts: np.ndarray
    picked: np.ndarray | None = None


def picked_pixels(
    data: np.ndarray, row_off: int, col_off: int, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """The pixels of ``data`` (whose first pixel is at ``row_off``, ``col_off`` in the
    raster) at the raster rows and columns ``rows`` and ``cols`` that fall in it."""
    r = rows[(rows >= row_off) & (rows < row_off + data.shape[0])] - row_off
    c = cols[(cols >= col_off) & (cols < col_off + data.shape[1])] - col_off
    return data[np.ix_(r, c)]


def ignore_interrupts() -> None:
    """Make this (worker) process ignore Ctrl-C, which its parent handles."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def warm_up(*modules: str) -> None:
    """Import ``modules``: a worker process that runs it has imported them and this
    module (to unpickle the call), ready for the tasks that need them."""
    for name in modules:
        importlib.import_module(name)


def run_block(task: BlockTask | FileBlockTask, settings: PolygonSettings) -> BlockPolygons:
    """Sieve and polygonise one block (the parallel part of the health pass).

    A pure function of its arguments: wherever it runs (this thread, a worker process,
    a Dask worker) it gives the same result, which keeps the products byte-identical.
    """
    if isinstance(task, FileBlockTask):
        task = task.read()
    sieved = task.sieved()
    k = settings.n_values
    values, value_sum, value_count = None, np.zeros(k), np.zeros(k, dtype="int64")
    valid = sieved.ravel() != NODATA
    if settings.values is not None and valid.any():
        values = settings.values(task.window).reshape(k, -1)
        has_value = np.isfinite(values) & valid
        value_sum = np.where(has_value, values, 0.0).sum(axis=1)
        value_count = has_value.sum(axis=1)
    batch, labels = _block_polygons(
        sieved, task.confidence, task.window, values, k, settings.classes
    )
    edges = labels[0], labels[-1], labels[:, 0], labels[:, -1]
    counts = np.bincount(sieved.ravel(), minlength=256)
    picked = None
    if settings.picks is not None:
        row_off, col_off = int(task.window.row_off), int(task.window.col_off)
        picked = picked_pixels(sieved, row_off, col_off, *settings.picks)
    kept = sieved if settings.keep_sieved else None
    return BlockPolygons(task.window, kept, batch, *edges, value_sum, value_count, counts, picked)


def _block_polygons(
    data: np.ndarray,
    conf: np.ndarray | None,
    window: Window,
    values: np.ndarray | None = None,
    n_values: int = 0,
    classes: np.ndarray | None = None,
) -> tuple[PolygonBatch, np.ndarray]:
    """Polygons of one block's classes (at ``window``), in whole-raster pixel coordinates.

    ``values`` are ``(n_values, pixels)`` per-pixel values of the block to sum per polygon;
    ``classes`` (a boolean per value) limits the polygons to those classes.
    Also returns the block's pixels labelled with their polygon's index plus one
    (0 for nodata and for classes left out).
    """
    valid = data != NODATA
    if classes is not None:
        valid &= classes[data]
    if not valid.any():
        return PolygonBatch.empty(n_values), np.zeros(data.shape, dtype="int32")
    offset = Affine.translation(window.col_off, window.row_off)
    # Label the 4-connected regions of each class first and polygonise the labels, so
    # every polygon comes with its pixels (burning polygons back is quadratic in their
    # vertices: minutes for a many-holed soil polygon).
    regions = np.zeros(data.shape, dtype="int32")
    region_class = [np.zeros(1, dtype="uint8")]  # region 0: no region
    n_regions = 0
    present = np.flatnonzero(np.bincount(data[valid], minlength=256))
    for value in present:
        found_regions, count = ndimage.label(data == value, structure=_FOUR_CONNECTED)
        np.add(found_regions, n_regions, out=regions, where=found_regions > 0)
        region_class.append(np.full(count, value, dtype="uint8"))
        n_regions += count
    # GDAL's shapes come as Python coordinate lists (~100 bytes a vertex): turn them
    # into GEOS polygons a slice at a time, so they never all exist at once.
    pieces, ids = [], []
    found = shapes(regions, mask=valid, connectivity=4, transform=offset)
    while piece := list(itertools.islice(found, SHAPES_SLICE)):
        pieces.append(polygons_from_geojson([g for g, _ in piece]))
        ids.append(np.array([int(v) for _, v in piece], dtype="int64"))
    geometry = np.concatenate(pieces) if pieces else np.empty(0, dtype=object)
    region_ids = np.concatenate(ids) if ids else np.empty(0, dtype="int64")
    class_id = np.concatenate(region_class)[region_ids]
    polygon_of_region = np.zeros(n_regions + 1, dtype="int32")
    polygon_of_region[region_ids] = np.arange(1, len(geometry) + 1)
    labels2d = polygon_of_region[regions]
    # The pixels of a polygon, in raster order (the sums below add them in that order
    # whatever is left out): most of a block is soil and crop.
    inside = np.flatnonzero(labels2d)
    owner = labels2d.ravel()[inside]
    n = len(geometry) + 1
    pixels = np.bincount(owner, minlength=n)[1:].astype("int64")
    value_sum = np.zeros((n - 1, n_values))
    value_count = np.zeros((n - 1, n_values), dtype="int64")
    if values is not None:
        for k in range(n_values):
            found = values[k][inside]
            has_value = np.isfinite(found)
            value_sum[:, k] = np.bincount(owner[has_value], weights=found[has_value], minlength=n)[
                1:
            ]
            value_count[:, k] = np.bincount(owner[has_value], minlength=n)[1:]
    conf_sum: np.ndarray = np.zeros(n - 1)
    conf_count: np.ndarray = np.zeros(n - 1, dtype="int64")
    if conf is not None:
        conf_inside = conf.ravel()[inside]
        has = conf_inside != NODATA
        conf_sum = np.bincount(owner[has], weights=conf_inside[has], minlength=n)[1:]
        conf_count = np.bincount(owner[has], minlength=n)[1:].astype("int64")
    batch = PolygonBatch(geometry, class_id, pixels, conf_sum, conf_count, value_sum, value_count)
    return batch, labels2d


def polygons_from_geojson(polygons: list[dict]) -> np.ndarray:
    """Shapely polygons from GeoJSON-like ``Polygon`` mappings, built in one vectorised call.

    Much faster than ``shapely.geometry.shape`` one by one: the coordinates of all
    rings are flattened into one array and handed to GEOS together.
    """
    if not polygons:
        return np.empty(0, dtype=object)
    rings = [ring for p in polygons for ring in p["coordinates"]]
    ring_of_polygon = np.repeat(np.arange(len(polygons)), [len(p["coordinates"]) for p in polygons])
    lengths = np.fromiter(map(len, rings), dtype="int64", count=len(rings))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(rings))
    coords = np.fromiter(flat, dtype="float64", count=2 * int(lengths.sum())).reshape(-1, 2)
    ring_geoms = shapely.linearrings(coords, indices=np.repeat(np.arange(len(rings)), lengths))
    return np.asarray(shapely.polygons(ring_geoms, indices=ring_of_polygon), dtype=object)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes joined by index ``pairs`` (k × 2)."""
    if n == 0:
        return np.empty(0, dtype="int64")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype("int64")


def _merge_groups(parts: PolygonBatch, roots: np.ndarray) -> PolygonBatch:
    """One polygon per group of ``parts`` with the same root: the union of its members."""
    order = np.argsort(roots, kind="stable")
    uniq, starts = np.unique(roots[order], return_index=True)
    groups = np.split(order, starts[1:])
    geometry = np.empty(len(uniq), dtype=object)
    for k, members in enumerate(groups):
        geometry[k] = (
            parts.geometry[members[0]]
            if len(members) == 1
            else union_parts(parts.geometry[members])
        )
    first = np.array([g[0] for g in groups], dtype="int64")
    return PolygonBatch(
        geometry,
        parts.class_id[first],
        *(np.add.reduceat(getattr(parts, name)[order], starts, axis=0) for name in _COLUMNS[2:]),
    )


def union_parts(parts: np.ndarray) -> shapely.Polygon:
    """The polygon of one region from its parts, cut out of it by block and strip seams.

    Parts lie in disjoint windows, so a part's holes never reach a seam and stay holes
    of the region whatever its neighbours are: only the outer rings are unioned, and
    the parts' holes are put back as they are. That is the same polygon as
    ``shapely.union_all(parts)`` (tested), at a fraction of the cost: a field-wide soil
    region with thousands of holes (4096² survey, 1.6M vertices) took 6.7 s and 480 MB
    to union whole, 0.5 s as outer rings.
    """
    outer = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(parts)))
    if outer.geom_type != "Polygon":  # parts of one region always meet along edges
        return shapely.union_all(parts)
    rings, owner = shapely.get_rings(parts, return_index=True)
    is_hole = np.ones(len(rings), dtype=bool)
    is_hole[np.unique(owner, return_index=True)[1]] = False  # each part's exterior comes first
    holes = [*outer.interiors, *rings[is_hole]]
    return shapely.Polygon(outer.exterior, holes)


def _seam_pairs(
    a: np.ndarray, b: np.ndarray, class_id: np.ndarray, whole: np.ndarray
) -> np.ndarray:
    """Pairs of part indexes (1-based) facing each other across a seam with the same class,
    of a class whose regions are joined across seams (``whole``, a boolean per class id)."""
    both = (a > 0) & (b > 0)
    a, b = a[both] - 1, b[both] - 1
    same = (class_id[a] == class_id[b]) & whole[class_id[a]]
    return np.unique(np.column_stack([a[same], b[same]]), axis=0)


#: Every class joined across a seam.
_EVERY_CLASS = np.ones(256, dtype=bool)


def _shifted(labels: np.ndarray, by: int) -> np.ndarray:
    """A block's part labels (index + 1, 0: none) as indexes among parts numbered from ``by``."""
    return np.where(labels > 0, labels + by, 0)


class StripPolygons:
    """Polygons of a class raster fed strip by strip (top to bottom), in pixel coordinates.

    Each strip is cut into blocks of ``block_size`` columns and polygonised block by
    block (:func:`run_block`, which may run anywhere). A region cut by block or strip
    seams comes out in parts; parts are joined where same-class pixels face each other
    across a seam (pixel adjacency, not geometry, decides), and each region's parts
    are unioned once, when no part of it reaches the strip's last row any more.
    :meth:`add_blocks` returns the regions a strip finished, so the cost stays linear
    in the raster whatever the strip height.

    Regions of the classes not in ``whole`` (a boolean per class id; None: every
    class) are not joined across the edges of the grid of ``block_size`` square cells
    (from the raster's top-left corner; strips may be shorter than a cell), so none
    of their polygons outgrows a cell.

    ``values`` reads ``n_values`` per-pixel values (vegetation indices) of a block's
    window; their sums and counts per polygon come with the polygons.
    """

    def __init__(
        self,
        height: int,
        width: int,
        block_size: int,
        values: ValueReader | None = None,
        n_values: int = 0,
        whole: np.ndarray | None = None,
    ) -> None:
        self._height = height
        self._width = width
        self._block_size = block_size
        self._settings = PolygonSettings(None, values, n_values if values is not None else 0)
        self._whole = np.ones(256, dtype=bool) if whole is None else whole
        self._carry = PolygonBatch.empty(self._settings.n_values)  # parts of regions still open
        self._carry_root = np.empty(0, dtype="int64")  # region of each carried part
        self._carry_row = np.zeros(width, dtype="int64")  # last row: carried part + 1

    def add(self, classes: np.ndarray, confidence: np.ndarray | None, row_off: int) -> PolygonBatch:
        """Polygonise strip rows ``classes`` starting at ``row_off``; return the finished ones."""
        strip = Strip(row_off, classes.shape[0], classes, 0, confidence)
        found = [
            run_block(task, self._settings) for task in block_tasks(strip, 0, self._block_size)
        ]
        return self.add_blocks(found)

    def add_blocks(self, found: list[BlockPolygons]) -> PolygonBatch:
        """Join the polygonised blocks of the next strip (left to right) to the regions
        still open above it; return the regions this strip finished."""
        window = found[0].window
        top, bottom = int(window.row_off), int(window.row_off + window.height)
        parts = [self._carry]
        count = len(self._carry)
        first_row = np.zeros(self._width, dtype="int64")
        last_row = np.zeros(self._width, dtype="int64")
        seams = [(self._carry_row, first_row)]  # pixels facing each other: part index + 1
        previous_column: np.ndarray | None = None
        for block in found:
            left, right = int(block.window.col_off), int(block.window.col_off + block.window.width)
            parts.append(block.polygons)
            first_row[left:right] = _shifted(block.top, count)
            last_row[left:right] = _shifted(block.bottom, count)
            if previous_column is not None:
                seams.append((previous_column, _shifted(block.left, count)))
            previous_column = _shifted(block.right, count)
            count += len(block.polygons)
        pool = PolygonBatch.concat(parts)
        links = [np.column_stack([np.arange(len(self._carry)), self._carry_root])]
        # Cut classes are cut at cell edges only: strips may be shorter than a cell.
        joined = [self._whole if top % self._block_size == 0 else _EVERY_CLASS]
        joined += [self._whole] * (len(seams) - 1)  # the rest are block (= cell) columns
        links += [
            _seam_pairs(a, b, pool.class_id, j) for (a, b), j in zip(seams, joined, strict=True)
        ]
        region = _components(count, np.concatenate(links))
        if bottom < self._height:
            is_open = np.isin(region, region[last_row[last_row > 0] - 1])
            if bottom % self._block_size == 0:
                is_open &= self._whole[pool.class_id]
        else:
            is_open = np.zeros(count, dtype=bool)
        done = ~is_open
        finished = _merge_groups(pool.take(done), region[done]) if done.any() else pool.take(done)
        # Carry the open parts, renumbered, with their region's first part and the last row.
        kept = np.flatnonzero(is_open)
        renumber = np.zeros(count + 1, dtype="int64")
        renumber[kept + 1] = np.arange(1, len(kept) + 1)
        regions, first = np.unique(region[kept], return_index=True)
        self._carry = pool.take(kept)
        self._carry_root = first[np.searchsorted(regions, region[kept])]
        self._carry_row = renumber[last_row]
        return finished


def _regroup(batches: Iterable[PolygonBatch], size: int) -> Iterator[PolygonBatch]:
    """Re-chunk a stream of batches into batches of about ``size`` polygons."""
    pending: list[PolygonBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        if count >= size:
            yield PolygonBatch.concat(pending)
            pending, count = [], 0
    if count:
        yield PolygonBatch.concat(pending)


def simplify_coverage(geometry: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify a group of pixel-coordinate polygons as one coverage.

    Edges shared by two polygons of the group are simplified once, so they stay
    shared: no gaps or overlaps appear. Edges on the group's outline (nodata, or
    polygons of another group) are kept exactly, which is what lets groups be
    simplified one at a time. If the result is not valid the group is returned
    unsimplified.

    Args:
        geometry: Polygons with integer (pixel-corner) vertices.
        tolerance: Simplification distance in pixels.
    """
    if tolerance <= 0 or not len(geometry):
        return geometry
    # Give every shared edge the same vertices on both sides, as a coverage requires.
    noded = shapely.segmentize(geometry, 1.0)
    simplified = shapely.coverage_simplify(noded, tolerance, simplify_boundary=False)
    ok = shapely.is_valid(simplified).all() and not shapely.is_empty(simplified).any()
    return np.asarray(simplified, dtype=object) if ok else geometry


def to_crs_coordinates(geometry: np.ndarray, transform: Affine) -> np.ndarray:
    """Move pixel-coordinate geometries to the raster CRS with its affine ``transform``."""
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geometry, apply)


def finish_polygons(
    batches: Iterable[PolygonBatch],
    transform: Affine,
    simplify_px: float = 0.0,
    coverage: bool = True,
) -> Iterator[PolygonBatch]:
    """Simplify (if ``simplify_px``) and move pixel-coordinate batches to the CRS.

    With ``coverage`` the polygons tile the raster, so they are simplified as
    coverages (shared edges stay shared, the outline exact); else (some classes are
    not vectorised, so their neighbours' edges are outline) each polygon is simplified
    on its own, keeping it valid, which may leave slivers of gap or overlap between
    touching polygons.
    """
    stream: Iterable[PolygonBatch] = batches
    if simplify_px > 0 and coverage:
        stream = _regroup(stream, SIMPLIFY_GROUP)
    for batch in stream:
        if not len(batch):
            continue
        geometry = batch.geometry
        if simplify_px > 0:
            geometry = (
                simplify_coverage(geometry, simplify_px)
                if coverage
                else np.asarray(shapely.simplify(geometry, simplify_px), dtype=object)
            )
        yield batch.with_geometry(to_crs_coordinates(geometry, transform))


def vectorize(
    classes_path: Path,
    confidence_path: Path | None = None,
    *,
    block_size: int = 2048,
    simplify_px: float = 0.0,
) -> Iterator[PolygonBatch]:
    """Polygons of a class raster, streamed in batches, in the raster's CRS.

    Every polygon is one maximal 4-connected region of one class (nodata is left
    out), with holes; regions cut by block seams are merged, so no two same-class
    polygons share an edge.

    Args:
        classes_path: Class raster (uint8, nodata 255), sieved beforehand if wanted.
        confidence_path: Matching confidence raster (0–100, nodata 255), or None.
        block_size: Edge of the processing blocks in pixels; memory grows with its square.
        simplify_px: Coverage-simplification tolerance in pixels (0: none).

    Yields:
        Batches of finished polygons.
    """
    with rasterio.open(classes_path) as src:
        height, width, transform = src.height, src.width, src.transform
    polygons = StripPolygons(height, width, block_size)
    batches = (
        polygons.add(strip.core, strip.confidence, strip.row_off)
        for strip in file_strips(classes_path, confidence_path, block_size)
    )
    yield from finish_polygons(batches, transform, simplify_px)

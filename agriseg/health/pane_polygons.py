"""One pane sieved and polygonised: the parallel part of the health pass.

:func:`run_pane` is a pure function of its task and settings, so it may run in this
thread, a worker process or on a Dask worker and give the same
:class:`PanePolygons`: the pane's polygons (whole-raster pixel coordinates), its
edge pixels labelled with their polygon (for :mod:`agriseg.health.seams`), and its
class counts, sums and picked pixels.
"""

from __future__ import annotations

import importlib
import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage

import agriseg.classes
from agriseg.classes import NODATA
from agriseg.health.panes import FilePaneTask, PaneTask
from agriseg.health.polygon_batch import PolygonBatch
from agriseg.segmentation.numpy_pages import small_pages_for_good

#: Polygons built from GDAL's shapes at a time (bounds their Python coordinate lists).
SHAPES_SLICE = 2048


#: Per-pixel values of a window of the raster, ``(k, h, w)`` float, NaN where undefined.
ValueReader = Callable[[Window], np.ndarray]


_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PolygonSettings:
    """What a pane's polygons are made of.

    Attributes:
        classes: Which class ids become polygons: a boolean per value 0–255 (nodata,
            255, never does); None: every class.
        values: Reads per-pixel values (vegetation indices) of a window, summed per
            polygon; None for none. Must pickle when panes run in worker processes.
        n_values: Number of values ``values`` gives per pixel.
        keep_sieved: Whether a pane returns its sieved class ids
            (:attr:`PanePolygons.sieved`; they are 1 byte a pixel to send back).
        picks: The raster rows and columns (ascending) a decimated copy of the sieved
            raster takes (the preview's, see :func:`picked_pixels`); a pane returns
            those in it (:attr:`PanePolygons.picked`). None: none.
    """

    classes: np.ndarray | None = None
    values: ValueReader | None = None
    n_values: int = 0
    keep_sieved: bool = True
    picks: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class PanePolygons:
    """One pane, sieved and polygonised: what :class:`StripPolygons` joins across seams.

    Attributes:
        window: The pane in the raster.
        sieved: The pane's sieved class ids.
        polygons: Its polygons, in whole-raster pixel coordinates.
        top, bottom, left, right: The pane's edge pixels labelled with their polygon's
            index plus one (0: no polygon).
        value_sum: Sum of each per-pixel value over all the pane's valid pixels
            (vectorised or not) that have one.
        value_count: Number of those pixels, per value.
        class_counts: Pixels of each value 0-255 in the sieved pane (255: nodata).
        picked: The sieved pixels at :attr:`PolygonSettings.picks` in the pane.
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

    @property
    def empty(self) -> bool:
        """Whether the pane holds no valid pixel."""
        return int(self.class_counts[NODATA]) == int(self.window.width) * int(self.window.height)


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


def start_worker() -> None:
    """Set up a worker process of the health pass: Ctrl-C is its parent's, and NumPy's
    arrays go on small pages (see :mod:`agriseg.segmentation.numpy_pages`)."""
    ignore_interrupts()
    small_pages_for_good()


def warm_up(*modules: str) -> None:
    """Import ``modules``: a worker process that runs it has imported them and this
    module (to unpickle the call), ready for the tasks that need them."""
    for name in modules:
        importlib.import_module(name)


def run_pane(task: PaneTask | FilePaneTask, settings: PolygonSettings) -> PanePolygons:
    """Sieve and polygonise one pane (the parallel part of the health pass).

    A pure function of its arguments: wherever it runs (this thread, a worker process,
    a Dask worker) it gives the same result, which keeps the products byte-identical.
    """
    if isinstance(task, FilePaneTask):
        task = task.read()
    k = settings.n_values
    if agriseg.classes.SKIP_EMPTY and task.empty:
        return _empty_pane(task, settings)
    sieved = task.sieved()
    values, value_sum, value_count = None, np.zeros(k), np.zeros(k, dtype="int64")
    valid = sieved.ravel() != NODATA
    if settings.values is not None and valid.any():
        values = _valid_values(settings.values, task.window, sieved != NODATA).reshape(k, -1)
        has_value = np.isfinite(values) & valid
        value_sum = np.where(has_value, values, 0.0).sum(axis=1)
        value_count = has_value.sum(axis=1)
    batch, labels = _pane_polygons(
        sieved, task.confidence, task.window, values, k, settings.classes
    )
    edges = labels[0], labels[-1], labels[:, 0], labels[:, -1]
    counts = np.bincount(sieved.ravel(), minlength=256)
    picked = None
    if settings.picks is not None:
        row_off, col_off = int(task.window.row_off), int(task.window.col_off)
        picked = picked_pixels(sieved, row_off, col_off, *settings.picks)
    kept = sieved if settings.keep_sieved else None
    return PanePolygons(task.window, kept, batch, *edges, value_sum, value_count, counts, picked)


def _valid_values(read: ValueReader, window: Window, valid: np.ndarray) -> np.ndarray:
    """``read``'s values of ``window`` where ``valid``: read over the valid pixels' bounding
    box only (an irregular flight area leaves much of a pane nodata), NaN around it,
    where no value is ever summed."""
    if not agriseg.classes.SKIP_EMPTY:
        return read(window)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (r0, c0, r1, c1) == (0, 0, *valid.shape):
        return read(window)
    inner = read(Window(window.col_off + c0, window.row_off + r0, c1 - c0, r1 - r0))
    values = np.full((inner.shape[0], *valid.shape), np.nan, dtype=inner.dtype)
    values[:, r0:r1, c0:c1] = inner
    return values


def _empty_pane(task: PaneTask, settings: PolygonSettings) -> PanePolygons:
    """What :func:`run_pane` finds in a pane without a valid pixel, without the work:
    sieving keeps its nodata and it has no polygon."""
    h, w = int(task.window.height), int(task.window.width)
    sieved = task.classes[task.top : task.top + h, task.left : task.left + w]
    counts = np.zeros(256, dtype="int64")
    counts[NODATA] = h * w
    picked = None
    if settings.picks is not None:
        row_off, col_off = int(task.window.row_off), int(task.window.col_off)
        picked = picked_pixels(sieved, row_off, col_off, *settings.picks)
    k = settings.n_values
    edges = np.zeros(w, dtype="int32"), np.zeros(h, dtype="int32")
    return PanePolygons(
        task.window,
        sieved if settings.keep_sieved else None,
        PolygonBatch.empty(k),
        edges[0],
        edges[0].copy(),
        edges[1],
        edges[1].copy(),
        np.zeros(k),
        np.zeros(k, dtype="int64"),
        counts,
        picked,
    )


def _pane_polygons(
    data: np.ndarray,
    conf: np.ndarray | None,
    window: Window,
    values: np.ndarray | None = None,
    n_values: int = 0,
    classes: np.ndarray | None = None,
) -> tuple[PolygonBatch, np.ndarray]:
    """Polygons of one pane's classes (at ``window``), in whole-raster pixel coordinates.

    ``values`` are ``(n_values, pixels)`` per-pixel values of the pane to sum per polygon;
    ``classes`` (a boolean per value) limits the polygons to those classes.
    Also returns the pane's pixels labelled with their polygon's index plus one
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
    # whatever is left out): most of a pane is soil and crop.
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

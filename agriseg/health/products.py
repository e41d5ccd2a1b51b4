"""Field-health products of a segmented raster: polygons, statistics, zones, styles, preview.

Everything is one pass over the class raster, strip by strip (:class:`HealthJob`):
sieve to the minimum mapping unit, vectorise, attribute and write the polygons, and
collect the preview; then the health summary, per-field statistics and zone grid,
and the QGIS styles. :func:`write_health_products` runs it over a finished class
raster; a run can also feed it the strips as it segments them
(:mod:`agriseg.health.health_stream`). Every file appears under its final name only once
complete.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.io
import shapely
from pyproj import CRS
from rasterio.windows import Window

import agriseg.classes
from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList
from agriseg.config import POLYGON_KEYWORDS, HealthOptions, VectorFormat
from agriseg.errors import InputError
from agriseg.health.geojson import rounding_keeps_lattice_polygons_valid
from agriseg.health.health_stats import (
    WHOLE,
    Zoning,
    health_summary,
    planar_class_areas,
    raster_crs,
    zone_class_areas,
)
from agriseg.health.indices import IndexReader, zone_index_means
from agriseg.health.pane_polygons import (
    PanePolygons,
    PolygonSettings,
    picked_pixels,
    run_pane,
)
from agriseg.health.panes import (
    FilePaneTask,
    PaneTask,
    file_pane_tasks,
    pane_tasks,
    sieve_halo,
    sieve_size,
    strip_panes,
)
from agriseg.health.polygon_batch import PolygonBatch
from agriseg.health.preview import (
    PngWriter,
    PreviewCanvas,
    StreamedPreview,
    preview_shape,
    read_preview_image,
)
from agriseg.health.qgis import class_style, write_layer_styles, zone_style
from agriseg.health.seams import StripPolygons
from agriseg.health.strips import FileStrip, Strip, raster_file_strips
from agriseg.health.vector_outputs import (
    OGR_DRIVERS,
    GeoJSONWriter,
    LayerWriter,
    geopackage_output,
)
from agriseg.health.vectorize import finish_polygons
from agriseg.io.areas import (
    geometry_area_perimeter_m,
    is_planar_metric,
    lonlat_points,
    pixel_area_rows_m2,
    pixel_size_m,
)
from agriseg.io.atomic import atomic_output, temporary_name, write_text_atomic
from agriseg.io.coverage import Coverage, coverage_on
from agriseg.io.gdal_settings import run_settings
from agriseg.io.grid import Grid
from agriseg.io.ownership import output_paths
from agriseg.io.working_copies import working_compression

if TYPE_CHECKING:
    from distributed import Client

from agriseg.health.geojson_queue import GeoJSONTexts
from agriseg.health.task_runner import Pending, TaskRunner, run_inline, task_runner
from agriseg.health.zones import (
    Fields,
    assign_fields,
    field_labeller,
    field_table,
    grid_labeller,
    make_grid,
    read_fields,
    zone_frame,
)

#: Most rows per strip of the health pass (panes are ``pane_size`` px wide). Short
#: strips let the pass begin after the first rows are segmented instead of the last:
#: a 2048² run on two cores ended 0.4-0.6 s sooner with 512 rows than with 2048.
STRIP_ROWS = 512

#: Most pixels per strip: wide rasters get shorter strips, so the pass's memory does
#: not grow with the raster's width (a 32768 px wide raster gets 256-row strips).
STRIP_PIXELS = 2048 * 4096

#: Fewest rows per strip, however wide the raster.
MIN_STRIP_ROWS = 64

#: Layer names inside ``<stem>.health.gpkg``.
POLYGON_LAYER = "health"
ZONE_LAYER = "zones"

#: Pixels above which a survey is large: ``--format auto`` writes no GeoJSON and
#: polygons are simplified by one pixel unless ``--simplify`` says otherwise (25 Mpx:
#: 5000 x 5000 px, 2 ha at 2 cm).
LARGE_SURVEY_PX = 25_000_000

#: Roles whose classes ``--polygons roles`` vectorises: the patches sprayers act on.
PATCH_ROLES = ("weed", "disease")

#: Roles whose regions span the field: cut on the grid of panes unless
#: ``--whole-regions``.
FIELD_ROLES = ("background", "crop")

#: Strips whose panes may be in flight at once, beyond the one being joined.
STRIPS_AHEAD = 2


def health_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where the health products of input ``stem`` are written."""
    return output_paths(out_dir, stem, ("geojson", "gpkg", "fgb", "qml", "preview"))


def polygon_classes(spec: str, classes: ClassList) -> tuple[int, ...]:
    """The class ids ``--polygons`` ``spec`` vectorises (see :class:`HealthOptions`)."""
    if spec == "roles":
        return tuple(c.id for c in classes if c.role in PATCH_ROLES)
    if spec == "all":
        return tuple(c.id for c in classes)
    if spec == "none":
        return ()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in classes.names]
    if unknown:
        raise InputError(
            f"--polygons {spec}: the model has no class {', '.join(unknown)}; expected "
            f"{', '.join(POLYGON_KEYWORDS)} or names among {', '.join(classes.names)}"
        )
    return tuple(c.id for c in classes if c.name in names)


def resolve_formats(options: HealthOptions, pixels: int) -> tuple[VectorFormat, ...]:
    """The files ``--format`` asks for: ``auto`` is the GeoPackage, plus GeoJSON for a
    survey of at most :data:`LARGE_SURVEY_PX` pixels."""
    chosen: list[VectorFormat] = []
    for choice in options.formats:
        if choice == "auto":
            found: tuple[VectorFormat, ...] = ("gpkg",)
            if pixels <= LARGE_SURVEY_PX:
                found = ("geojson", "gpkg")
        else:
            found = (choice,)
        chosen += [f for f in found if f not in chosen]
    return tuple(f for f in ("geojson", "gpkg", "fgb") if f in chosen)


def _template(crs: CRS, with_fields: bool, indices: tuple[str, ...] = ()) -> gpd.GeoDataFrame:
    columns: dict[str, pd.Series] = {
        "class": pd.Series([], dtype=object),
        "class_id": pd.Series([], dtype="int32"),
        "area_m2": pd.Series([], dtype="float64"),
        "perimeter_m": pd.Series([], dtype="float64"),
        "mean_confidence": pd.Series([], dtype="float64"),
        "lon": pd.Series([], dtype="float64"),
        "lat": pd.Series([], dtype="float64"),
    }
    for name in indices:
        columns[f"mean_{name}"] = pd.Series([], dtype="float64")
    if with_fields:
        columns["field_id"] = pd.Series([], dtype=object)
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _finite_or_nan(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` with NaN (null in the outputs) wherever either is not finite."""
    ok = np.isfinite(a) & np.isfinite(b)
    return np.where(ok, a, np.nan), np.where(ok, b, np.nan)


def polygon_attributes(
    batch: PolygonBatch,
    crs: CRS,
    classes: ClassList,
    fields: Fields | None,
    indices: tuple[str, ...] = (),
) -> gpd.GeoDataFrame:
    """The health-polygon table of one batch (geometries in ``crs``); ``indices`` names the
    batch's per-pixel values (vegetation indices), written as ``mean_<index>``.

    Where a centroid has no WGS84 lon/lat (off the Earth's disk in a geostationary
    view), ``lon`` and ``lat`` are null; so are area and perimeter where a geodesic
    measure is impossible (in a projected CRS they are planar and always known).
    """
    area, perimeter = _finite_or_nan(*geometry_area_perimeter_m(batch.geometry, crs))
    centroid = shapely.centroid(batch.geometry)
    lon, lat = _finite_or_nan(*lonlat_points(shapely.get_x(centroid), shapely.get_y(centroid), crs))
    columns: dict[str, Any] = {
        "class": np.array(classes.names, dtype=object)[batch.class_id],
        "class_id": batch.class_id.astype("int32"),
        "area_m2": np.round(area, 6),
        "perimeter_m": np.round(perimeter, 6),
        "mean_confidence": np.round(batch.mean_confidence, 3),
        "lon": np.round(lon, 7),
        "lat": np.round(lat, 7),
    }
    means = batch.mean_values
    for k, name in enumerate(indices):
        columns[f"mean_{name}"] = np.round(means[:, k], 4)
    if fields is not None:
        columns["field_id"] = assign_fields(batch.geometry, fields)
    return gpd.GeoDataFrame(columns, geometry=batch.geometry, crs=crs)


@dataclass(frozen=True)
class ClassRaster:
    """What the health pass needs to know of a class raster before any pixel.

    Attributes:
        grid: Where it lies (it must have a CRS: areas are measured on the ground).
        profile: rasterio profile for the sieved copy (uint8, nodata 255).
        classes: What its class ids mean (the model's classes).
    """

    grid: Grid
    profile: dict[str, Any]
    classes: ClassList = DEFAULT_CLASSES

    @classmethod
    def of_file(cls, path: Path) -> ClassRaster:
        """A class raster file; its classes come from its tags and colour table (the four
        default classes for rasters that carry none)."""
        with rasterio.open(path) as src:
            classes = ClassList.of_class_raster(src)
            raster_crs(src, path)  # refuses a raster without a CRS
            return cls(Grid.of_dataset(src), src.profile, classes)


@dataclass(frozen=True)
class HealthJob:
    """A field-health pass, checked and set up before any pixel exists.

    Built by :func:`plan_health` (which reads ``--fields`` and so fails early); run by
    :meth:`run` over the class raster's strips, strip by strip, e.g. while the
    segmentation that produces them is still running.
    """

    raster: ClassRaster
    options: HealthOptions
    fields: Fields | None
    pixel_m: float
    sieve_px: int
    polygon_ids: tuple[int, ...] = ()
    formats: tuple[VectorFormat, ...] = ("geojson", "gpkg")
    simplify_m: float = 0.0

    @property
    def grid(self) -> Grid:
        return self.raster.grid

    @property
    def output_kinds(self) -> tuple[str, ...]:
        """The products the pass writes (kinds of :func:`health_paths`)."""
        qml = ("qml",) if self.formats else ()
        return (*self.formats, *qml, *(("preview",) if self.options.preview else ()))

    @property
    def crs(self) -> CRS:
        """The class raster's CRS (a health pass always has one)."""
        assert self.raster.grid.crs is not None
        return self.raster.grid.crs

    @property
    def strip_height(self) -> int:
        """Rows per strip: short strips let a run's health pass follow close behind it,
        and bound its memory on wide rasters (see :data:`STRIP_PIXELS`). Always a
        divisor of ``pane_size``, so strip seams fall on the edges of the grid of
        cells that field-spanning regions are cut on (see :class:`StripPolygons`)."""
        by_width = max(MIN_STRIP_ROWS, STRIP_PIXELS // max(1, self.grid.width))
        size = self.options.pane_size
        limit = min(size, STRIP_ROWS, by_width)
        return max(d for d in range(1, limit + 1) if size % d == 0)

    @property
    def halo(self) -> int:
        """Context rows each strip needs around it (for sieving)."""
        return sieve_halo(self.sieve_px, self.options.pane_size)

    def polygon_settings(
        self,
        indices: IndexReader | None,
        keep_sieved: bool = True,
        picks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> PolygonSettings:
        """What each pane's polygons are made of (classes, vegetation indices) and what
        it sends back of its sieved pixels (see :class:`PolygonSettings`)."""
        vectorized = np.zeros(256, dtype=bool)
        vectorized[list(self.polygon_ids)] = True
        if indices is None:
            return PolygonSettings(vectorized, keep_sieved=keep_sieved, picks=picks)
        return PolygonSettings(
            vectorized, indices.read, len(indices.names), keep_sieved=keep_sieved, picks=picks
        )

    def whole_classes(self) -> np.ndarray:
        """Which class ids' regions are joined across pane seams (a boolean per value)."""
        whole = np.ones(256, dtype=bool)
        if not self.options.whole_regions:
            whole[[c.id for c in self.raster.classes if c.role in FIELD_ROLES]] = False
        return whole

    def file_strips(self, classes_path: Path, confidence_path: Path | None) -> Iterator[FileStrip]:
        """The strips this pass takes of finished class and confidence rasters (read by
        the processes that sieve their panes, or here for a cluster's)."""
        return raster_file_strips(classes_path, confidence_path, self.strip_height, self.halo)

    def run(
        self,
        strips: Iterable[Strip | FileStrip],
        image_path: Path | None,
        out_dir: Path,
        stem: str,
        runner: TaskRunner | None = None,
    ) -> dict[str, Any]:
        """Write the products of the raster whose strips (top to bottom) are ``strips``.

        Panes are sieved and polygonised, and polygons made into GeoJSON text, by
        ``runner`` (from :meth:`task_runner`, entered early so its processes start while
        the raster is still being made), else by one made here. See
        :func:`write_health_products` for the files and the returned summary.
        """
        return _run_health(self, strips, image_path, Path(out_dir), stem, runner)

    def task_runner(
        self,
        client: Client | None = None,
        valid_pixels: int | None = None,
        spare_cores: int | None = None,
    ) -> contextlib.AbstractContextManager[TaskRunner]:
        """Where this pass's tasks run: ``client``'s Dask workers, else
        ``options.workers`` local processes, started (and their modules imported) right
        away; as many as the raster's size asks for, or its ``valid_pixels`` when known
        (nodata costs next to nothing), and no more than the ``spare_cores`` a
        segmentation running beside the pass leaves (see
        :func:`~agriseg.health.task_runner.task_runner`)."""
        pixels = self.grid.width * self.grid.height
        if valid_pixels is not None:
            pixels = min(pixels, valid_pixels)
        return task_runner(client, self.options.workers, pixels, spare_cores)


def plan_health(raster: ClassRaster, options: HealthOptions | None = None) -> HealthJob:
    """Check the options against the raster and read ``--fields``; see :class:`HealthJob`."""
    options = options or HealthOptions()
    grid = raster.grid
    if grid.crs is None:
        raise InputError("the field-health pass needs a class raster with a CRS")
    fields = read_fields(options.fields, grid.crs) if options.fields is not None else None
    pixel_m = pixel_size_m(grid.crs, grid.transform, grid.width, grid.height)
    sieve_px = sieve_size(options.min_area_m2, pixel_m**2)
    pixels = grid.width * grid.height
    simplify_m = options.simplify_m
    if simplify_m is None:
        simplify_m = pixel_m if pixels > LARGE_SURVEY_PX else 0.0
    return HealthJob(
        raster,
        options,
        fields,
        pixel_m,
        sieve_px,
        polygon_classes(options.polygons, raster.classes),
        resolve_formats(options, pixels),
        simplify_m,
    )


def _polygon_writers(
    stack: contextlib.ExitStack,
    job: HealthJob,
    files: dict[str, Path],
    indices: tuple[str, ...],
) -> list[GeoJSONWriter | LayerWriter]:
    grid = job.grid
    writers: list[GeoJSONWriter | LayerWriter] = []
    if "geojson" in files:
        snap = job.simplify_m > 0 or not rounding_keeps_lattice_polygons_valid(
            job.crs, grid.transform, grid.height, grid.width
        )
        writer = GeoJSONWriter(files["geojson"], job.crs, snap_safely=snap)
        writers.append(stack.enter_context(writer))
    template = _template(job.crs, job.fields is not None, indices)
    for fmt, driver in OGR_DRIVERS.items():
        if fmt in files:
            layer = LayerWriter(files[fmt], POLYGON_LAYER, template, driver)
            writers.append(stack.enter_context(layer))
    return writers


class _BackgroundPreview:
    """Draws the preview on a thread as the sieved strips arrive (see
    :class:`~agriseg.health.preview.StreamedPreview`): the image is read at preview size first,
    then each strip's rows are blended and written while the next strips are sieved, so
    the PNG is finished soon after the last strip is."""

    def __init__(
        self, raster: ClassRaster, image_path: Path | None, png: PngWriter, pool: ThreadPoolExecutor
    ) -> None:
        grid = raster.grid
        self._canvas = PreviewCanvas(grid.height, grid.width)
        self._pool = pool
        self._png = png
        self._stream = pool.submit(self._start, raster.classes, image_path)
        self._last: Future[None] | None = None

    def _start(self, classes: ClassList, image_path: Path | None) -> StreamedPreview:
        image = read_preview_image(image_path, self._canvas.shape) if image_path else None
        return StreamedPreview(self._canvas.shape, classes, image, self._png)

    @property
    def picks(self) -> tuple[np.ndarray, np.ndarray]:
        """The raster rows and columns the preview takes (see :class:`PreviewCanvas`)."""
        return self._canvas.picks

    def add(self, picked: np.ndarray, row_off: int) -> None:
        """Take the sieved pixels at :attr:`picks` of the strip from raster row
        ``row_off``, in order (the pool's one thread takes them in order)."""
        start = self._canvas.first_row(row_off)
        self._last = self._pool.submit(lambda: self._stream.result().add(start, picked))

    def result(self) -> None:
        """Wait for the preview's rows to be written; raise what drawing them raised."""
        self._stream.result()
        if self._last is not None:
            self._last.result()


def _unread_if_empty(task: FilePaneTask, coverage: Coverage | None) -> PaneTask | FilePaneTask:
    """``task``, or its nodata pixels unread where ``coverage`` of the segmented image
    (whose invalid pixels are the class raster's nodata) proves the pane empty."""
    if coverage is None or coverage.any_valid(task.window):
        return task
    return PaneTask.nodata(task.window, task.sieve_px)


def _runner_for(
    task: PaneTask | FilePaneTask, run: TaskRunner
) -> Callable[..., Pending[PanePolygons]]:
    """Where ``task`` runs: here when it has no valid pixel (it is done at once), else ``run``."""
    if agriseg.classes.SKIP_EMPTY and isinstance(task, PaneTask) and task.empty:
        return run_inline
    return run


def _write_polygons(
    job: HealthJob,
    strips: Iterable[Strip | FileStrip],
    sieved: Path | None,
    files: dict[str, Path],
    run: TaskRunner,
    preview: _BackgroundPreview | None = None,
    indices: IndexReader | None = None,
    image_coverage: Coverage | None = None,
) -> tuple[int, int, dict[str, float | None], list[np.ndarray]]:
    """Sieve ``strips`` (into ``sieved`` unless None) and vectorise them into ``files``,
    in one pass.

    Each strip's panes go to ``run`` as soon as the strip arrives, up to
    :data:`STRIPS_AHEAD` strips ahead of the one being joined; joining, numbering and
    writing take the strips in order, so the products do not depend on where or in
    which order the panes ran. Sieved strips also go to ``preview``; ``indices`` are
    averaged per polygon; panes that ``image_coverage`` (the segmented image's) proves
    empty are not read. Returns the number of polygons, how many of them the GeoJSON
    left out because they cannot be projected to WGS84, each index's mean over every
    valid pixel, and the pixel count of each value (0-255) in every ``pane_size``
    window of the raster, row by row (see :func:`~agriseg.health.health_stats.planar_class_areas`).
    """
    grid, options = job.grid, job.options
    profile = {
        **job.raster.profile,
        "driver": "GTiff",
        "count": 1,
        "dtype": "uint8",
        "nodata": NODATA,
        # A working copy, read once (deflate level 1 wrote a 4096² one 8 x faster
        # than the default level 6, for a 40 % larger file; Zstandard faster still).
        **working_compression(),
    }
    names = indices.names if indices is not None else ()
    # Panes send back only what this process uses of their sieved pixels.
    settings = job.polygon_settings(
        indices,
        keep_sieved=sieved is not None,
        picks=preview.picks if preview is not None else None,
    )
    polygons = StripPolygons(grid.height, grid.width, options.pane_size, whole=job.whole_classes())
    value_sum = np.zeros(len(names))
    value_count = np.zeros(len(names))
    # Strips are at most pane_size rows and divide it: each window of the pane grid
    # sums the counts of the strips' panes in it (integers, so in any order).
    class_counts: dict[tuple[int, int], np.ndarray] = {}

    size = options.pane_size

    def add_counts(window: Window, counts: np.ndarray) -> None:
        """Add a pane's pixel counts to its window of the pane grid."""
        key = (int(window.row_off) // size, int(window.col_off) // size)
        class_counts[key] = class_counts.get(key, 0) + counts

    def join(found: list[PanePolygons], dst: rasterio.io.DatasetWriter | None) -> PolygonBatch:
        for pane in found:
            value_sum[:] += pane.value_sum
            value_count[:] += pane.value_count
            add_counts(pane.window, pane.class_counts)
        row_off = int(found[0].window.row_off)
        # The sieved copy is sparse: rows without a valid pixel need no writing.
        if dst is not None and not all(pane.empty for pane in found):
            core = np.concatenate([pane.sieved for pane in found], axis=1)
            dst.write(core, 1, window=Window(0, row_off, grid.width, core.shape[0]))
        if preview is not None:
            preview.add(np.concatenate([pane.picked for pane in found], axis=1), row_off)
        return polygons.add_panes(found)

    def join_empty(strip: Strip) -> PolygonBatch:
        """:func:`join` of a strip known to hold no valid pixel, without its panes."""
        for window in strip_panes(strip.row_off, strip.height, grid.width, size):
            counts = np.zeros(256, dtype="int64")
            counts[NODATA] = int(window.height) * int(window.width)
            add_counts(window, counts)
        if preview is not None:
            preview.add(picked_pixels(strip.core, strip.row_off, 0, *preview.picks), strip.row_off)
        return polygons.add_empty()

    def pixel_batches(dst: rasterio.io.DatasetWriter | None) -> Iterator[PolygonBatch]:
        in_flight: deque[list[Pending[PanePolygons]] | Strip] = deque()

        def settle(item: list[Pending[PanePolygons]] | Strip, last: bool) -> PolygonBatch:
            if isinstance(item, Strip):
                return join_empty(item)
            found = results(item)
            if last and texts is not None:
                texts.runner_idle = True  # the panes are done: the last text can go there
            return join(found, dst)

        for strip in strips:
            tasks: Sequence[PaneTask | FilePaneTask]
            if isinstance(strip, Strip) and strip.empty:
                in_flight.append(strip)
            else:
                if isinstance(strip, FileStrip) and run.local:
                    tasks = [
                        _unread_if_empty(task, image_coverage)
                        for task in file_pane_tasks(strip, job.sieve_px, options.pane_size)
                    ]
                else:  # a cluster's workers may not see this machine's files
                    read = strip.read() if isinstance(strip, FileStrip) else strip
                    tasks = pane_tasks(read, job.sieve_px, options.pane_size)
                in_flight.append(
                    [_runner_for(task, run)(run_pane, task, settings) for task in tasks]
                )
            if len(in_flight) > STRIPS_AHEAD:
                yield settle(in_flight.popleft(), last=False)
        while in_flight:
            item = in_flight.popleft()
            yield settle(item, last=not in_flight)

    def results(found: list[Pending[PanePolygons]]) -> list[PanePolygons]:
        if texts is not None:
            for pane in found:
                texts.make_while(pane)
        return [pane.result() for pane in found]

    with contextlib.ExitStack() as stack:
        dst = stack.enter_context(rasterio.open(sieved, "w", **profile)) if sieved else None
        writers = _polygon_writers(stack, job, files, names)
        count = 0
        simplify_px = job.simplify_m / job.pixel_m
        coverage = len(job.polygon_ids) == len(job.raster.classes)
        batches = finish_polygons(pixel_batches(dst), grid.transform, simplify_px, coverage)
        geojson = next((w for w in writers if isinstance(w, GeoJSONWriter)), None)
        texts = GeoJSONTexts(geojson, run) if geojson is not None else None
        for batch in batches:
            frame = polygon_attributes(batch, job.crs, job.raster.classes, job.fields, names)
            if texts is not None:
                texts.add(frame)
            for writer in writers:
                if writer is not geojson:
                    writer.write(frame)
            count += len(frame)
        if texts is not None:
            texts.finish()
        unprojectable = geojson.unprojectable if geojson is not None else 0
    means = {
        name: round(float(value_sum[k] / value_count[k]), 4) if value_count[k] else None
        for k, name in enumerate(names)
    }
    return count, unprojectable, means, [class_counts[key] for key in sorted(class_counts)]


@dataclass(frozen=True)
class _Statistics:
    """The health statistics of a sieved class raster: the whole raster's class areas,
    and the per-field table and zone layer when asked for."""

    areas: np.ndarray
    fields: list[dict] | None
    zones: gpd.GeoDataFrame | None


def _reads_sieved(job: HealthJob) -> bool:
    """Whether the statistics read the sieved raster back: for fields and grid cells, and
    for class areas on CRSs whose pixel area varies; else the panes' counts suffice."""
    return job.fields is not None or job.options.grid_m is not None or not is_planar_metric(job.crs)


def _statistics(
    job: HealthJob, sieved: Path | None, indices: IndexReader | None, counts: list[np.ndarray]
) -> _Statistics:
    """Class areas of the whole raster, its fields and its grid cells, in one read of the
    sieved raster (and one of the image for the vegetation indices); without ``sieved``
    (see :func:`_reads_sieved`), the class areas from the panes' pixel ``counts``."""
    grid, options, classes = job.grid, job.options, job.raster.classes
    if sieved is None:
        area = float(pixel_area_rows_m2(job.crs, grid.transform, np.zeros(1), 0.0)[0])
        return _Statistics(planar_class_areas(counts, len(classes), area), None, None)
    zonings = [WHOLE]
    if job.fields is not None:
        zonings.append(Zoning(field_labeller(job.fields, grid.transform), len(job.fields.ids)))
    cells = None
    if options.grid_m is not None:
        cells = make_grid(job.crs, grid.transform, grid.width, grid.height, options.grid_m)
        zonings.append(Zoning(grid_labeller(cells, job.crs, grid.transform), cells.n_cells))
    areas = zone_class_areas(sieved, len(classes), zonings, pane_size=options.pane_size)
    means: list[np.ndarray | None] = [None] * len(zonings)
    if indices is not None and len(zonings) > 1:
        means[1:] = zone_index_means(
            indices, grid.height, grid.width, zonings[1:], pane_size=options.pane_size
        )
    fields = zones = None
    k = 1
    if job.fields is not None:
        fields = field_table(job.fields, classes, areas[k], means[k], indices)
        k += 1
    if cells is not None:
        zones = zone_frame(cells, classes, areas[k], means[k], indices)
    return _Statistics(areas[0][0], fields, zones)


def _write_zones(zones: gpd.GeoDataFrame, gpkg: Path, options: HealthOptions) -> dict[str, Any]:
    """Add the management-zone layer to ``gpkg``; return its summary."""
    with LayerWriter(gpkg, ZONE_LAYER, zones.iloc[:0]) as writer:
        writer.write(zones)
    return {"cells": len(zones), "cell_size_m": options.grid_m, "crs": zones.crs.to_string()}


def write_health_products(
    classes_path: Path,
    confidence_path: Path | None,
    image_path: Path | None,
    out_dir: Path,
    stem: str,
    options: HealthOptions | None = None,
) -> dict[str, Any]:
    """Write the field-health products of a class raster into ``out_dir``.

    Writes ``<stem>.health.geojson`` (RFC 7946) and/or ``<stem>.health.gpkg``
    (native CRS; layers ``health``, ``zones`` with ``--grid``, and QGIS
    ``layer_styles``), the QGIS sidecar ``<stem>.health.qml`` and
    ``<stem>.preview.png``. Areas and statistics use the raster sieved to
    ``options.min_area_m2``. (A run does the same while it segments: see
    :class:`HealthJob`.)

    Args:
        classes_path: ``<stem>.classes.tif`` (uint8, nodata 255, with a CRS).
        confidence_path: ``<stem>.confidence.tif`` (0–100, nodata 255), or None.
        image_path: The segmented image, for the preview; None draws classes alone.
        out_dir: Existing output folder.
        stem: Base name of the outputs.
        options: What to write and how (defaults: :class:`HealthOptions`).

    Returns:
        Additions to ``<stem>.summary.json``: ``health`` (see
        :func:`agriseg.health.health_stats.health_summary`, plus ``min_area_m2``, ``sieve_px``
        and ``polygons``), ``fields`` (per-field statistics, with ``--fields``),
        ``zones`` (cell count, size and CRS, with ``--grid``), ``outputs``
        (paths written, as text) and, when some polygons cannot be projected to
        WGS84 and were left out of the GeoJSON (``health["unprojectable_polygons"]``),
        ``warnings``.

    Raises:
        InputError: The class raster has no CRS, or the fields file is unusable.
        OutputError: An output could not be written.
    """
    classes_path = Path(classes_path)
    job = plan_health(ClassRaster.of_file(classes_path), options)
    with run_settings():
        strips = job.file_strips(classes_path, confidence_path)
        return _run_health(job, strips, image_path, Path(out_dir), stem)


def _run_health(
    job: HealthJob,
    strips: Iterable[Strip | FileStrip],
    image_path: Path | None,
    out_dir: Path,
    stem: str,
    runner: TaskRunner | None = None,
) -> dict[str, Any]:
    options = job.options
    classes = job.raster.classes
    indices = IndexReader.of_file(image_path)
    paths = health_paths(out_dir, stem)
    sieved = None
    if _reads_sieved(job):
        sieved = temporary_name(output_paths(out_dir, stem, ("sieved",))["sieved"])
    written: dict[str, str] = {}
    result: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as outer:
            preview = None
            if options.preview:
                # Entered before the pool: on the way out the drawing thread finishes
                # first, then the PNG is completed and appears (or, after an error, is
                # closed and removed).
                preview_tmp = outer.enter_context(atomic_output(paths["preview"]))
                shape = preview_shape(job.grid.height, job.grid.width)
                png = outer.enter_context(PngWriter(preview_tmp, *shape))
                pool = outer.enter_context(ThreadPoolExecutor(1, "agriseg-preview"))
                preview = _BackgroundPreview(job.raster, image_path, png, pool)
            with contextlib.ExitStack() as stack:
                tmp: dict[str, Path] = {
                    f: stack.enter_context(
                        geopackage_output(paths[f]) if f in OGR_DRIVERS else atomic_output(paths[f])
                    )
                    for f in job.formats
                }
                run = runner or stack.enter_context(job.task_runner())
                coverage = coverage_on(image_path, job.grid)
                count, unprojectable, index_means, counts = _write_polygons(
                    job, strips, sieved, tmp, run, preview, indices, coverage
                )
                stats = _statistics(job, sieved, indices, counts)
                if "gpkg" in tmp:
                    styles = {POLYGON_LAYER: class_style(classes)}
                    if stats.zones is not None:
                        result["zones"] = _write_zones(stats.zones, tmp["gpkg"], options)
                        styles[ZONE_LAYER] = zone_style()
                    write_layer_styles(tmp["gpkg"], styles)
            for fmt in job.formats:
                written[fmt] = str(paths[fmt])
            if job.formats:
                write_text_atomic(paths["qml"], class_style(classes))
                written["qml"] = str(paths["qml"])
            health = health_summary(stats.areas, classes)
            result["health"] = {
                **health,
                "min_area_m2": options.min_area_m2,
                "sieve_px": job.sieve_px,
                "polygons": count,
                "polygon_classes": [classes[k].name for k in job.polygon_ids],
                "simplify_m": job.simplify_m,
                "unprojectable_polygons": unprojectable,
                "vegetation_indices": index_means,
            }
            if unprojectable:
                kept = (
                    f"{paths['gpkg'].name} keeps them in the raster's CRS"
                    if "gpkg" in job.formats
                    else "add --format gpkg to keep them in the raster's CRS"
                )
                result["warnings"] = [
                    f"{unprojectable} of {count} polygons cannot be projected to WGS84 "
                    "longitude/latitude (off the Earth's disk, or around a pole) and were "
                    f"left out of {paths['geojson'].name}; {kept}"
                ]
            if stats.fields is not None:
                result["fields"] = stats.fields
            if preview is not None:
                preview.result()
                written["preview"] = str(paths["preview"])
    finally:
        if sieved is not None:
            sieved.unlink(missing_ok=True)
    result["outputs"] = written
    return result

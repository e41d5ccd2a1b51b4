"""Field-health products of a segmented raster: polygons, statistics, zones, styles, preview.

Everything is one pass over the class raster, strip by strip (:class:`HealthJob`):
sieve to the minimum mapping unit, vectorise, attribute and write the polygons, and
collect the preview; then the health summary, per-field statistics and zone grid,
and the QGIS styles. :func:`write_health_products` runs it over a finished class
raster; a run can also feed it the strips as it segments them
(:mod:`agriseg.health_stream`). Every file appears under its final name only once
complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.io
import shapely
from pyproj import CRS
from rasterio.windows import Window

from agriseg.areas import geometry_area_perimeter_m, lonlat_points, pixel_size_m
from agriseg.atomic import atomic_output, temporary_name, write_text_atomic
from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList
from agriseg.config import HealthOptions
from agriseg.errors import InputError
from agriseg.gdal_settings import run_settings
from agriseg.grid import Grid
from agriseg.health import WHOLE, Zoning, health_summary, raster_crs, zone_class_areas
from agriseg.indices import IndexReader, zone_index_means
from agriseg.outputs import output_paths
from agriseg.preview import PreviewCanvas, blend_preview, save_png
from agriseg.qgis import class_style, write_layer_styles, zone_style
from agriseg.strips import Strip, file_strips
from agriseg.vector_outputs import (
    GeoJSONWriter,
    GpkgLayerWriter,
    geopackage_output,
    rounding_keeps_lattice_polygons_valid,
)
from agriseg.vectorize import (
    PolygonBatch,
    StripPolygons,
    finish_polygons,
    sieve_halo,
    sieve_size,
    sieve_strip,
)
from agriseg.zones import (
    Fields,
    assign_fields,
    field_labeller,
    field_table,
    grid_labeller,
    make_grid,
    read_fields,
    zone_frame,
)

#: Most rows per strip of the health pass (blocks are ``block_size`` px wide).
STRIP_ROWS = 2048

#: Most pixels per strip: wide rasters get shorter strips, so the pass's memory does
#: not grow with the raster's width (a 4096 px wide raster keeps 2048-row strips).
STRIP_PIXELS = 2048 * 4096

#: Fewest rows per strip, however wide the raster.
MIN_STRIP_ROWS = 64

#: Layer names inside ``<stem>.health.gpkg``.
POLYGON_LAYER = "health"
ZONE_LAYER = "zones"


def health_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where the health products of input ``stem`` are written."""
    return output_paths(out_dir, stem, ("geojson", "gpkg", "qml", "preview"))


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

    @property
    def grid(self) -> Grid:
        return self.raster.grid

    @property
    def crs(self) -> CRS:
        """The class raster's CRS (a health pass always has one)."""
        assert self.raster.grid.crs is not None
        return self.raster.grid.crs

    @property
    def strip_height(self) -> int:
        """Rows per strip: short strips let a run's health pass follow close behind it,
        and bound its memory on wide rasters (see :data:`STRIP_PIXELS`)."""
        by_width = max(MIN_STRIP_ROWS, STRIP_PIXELS // max(1, self.grid.width))
        return min(self.options.block_size, STRIP_ROWS, by_width)

    @property
    def halo(self) -> int:
        """Context rows each strip needs around it (for sieving)."""
        return sieve_halo(self.sieve_px, self.options.block_size) if self.sieve_px > 1 else 0

    def file_strips(self, classes_path: Path, confidence_path: Path | None) -> Iterator[Strip]:
        """The strips this pass takes, read from finished class and confidence rasters."""
        return file_strips(classes_path, confidence_path, self.strip_height, self.halo)

    def run(
        self,
        strips: Iterable[Strip],
        image_path: Path | None,
        out_dir: Path,
        stem: str,
    ) -> dict[str, Any]:
        """Write the products of the raster whose strips (top to bottom) are ``strips``.

        See :func:`write_health_products` for the files and the returned summary.
        """
        return _run_health(self, strips, image_path, Path(out_dir), stem)


def plan_health(raster: ClassRaster, options: HealthOptions | None = None) -> HealthJob:
    """Check the options against the raster and read ``--fields``; see :class:`HealthJob`."""
    options = options or HealthOptions()
    grid = raster.grid
    if grid.crs is None:
        raise InputError("the field-health pass needs a class raster with a CRS")
    fields = read_fields(options.fields, grid.crs) if options.fields is not None else None
    pixel_m = pixel_size_m(grid.crs, grid.transform, grid.width, grid.height)
    sieve_px = sieve_size(options.min_area_m2, pixel_m**2)
    return HealthJob(raster, options, fields, pixel_m, sieve_px)


def _polygon_writers(
    stack: contextlib.ExitStack,
    job: HealthJob,
    geojson: Path | None,
    gpkg: Path | None,
    indices: tuple[str, ...],
) -> list[GeoJSONWriter | GpkgLayerWriter]:
    grid = job.grid
    writers: list[GeoJSONWriter | GpkgLayerWriter] = []
    if geojson is not None:
        snap = job.options.simplify_m > 0 or not rounding_keeps_lattice_polygons_valid(
            job.crs, grid.transform, grid.height, grid.width
        )
        writers.append(stack.enter_context(GeoJSONWriter(geojson, job.crs, snap_safely=snap)))
    if gpkg is not None:
        template = _template(job.crs, job.fields is not None, indices)
        writers.append(stack.enter_context(GpkgLayerWriter(gpkg, POLYGON_LAYER, template)))
    return writers


class _BackgroundPreview:
    """Collects the sieved strips for the preview and draws it on a thread once complete,
    while the last strip is still being vectorised."""

    def __init__(
        self, raster: ClassRaster, image_path: Path | None, out: Path, pool: ThreadPoolExecutor
    ) -> None:
        grid = raster.grid
        self._canvas = PreviewCanvas(grid.height, grid.width)
        self._classes = raster.classes
        self._height = grid.height
        self._image_path = image_path
        self._out = out
        self._pool = pool
        self._future: Future[None] | None = None

    def add(self, rows: np.ndarray, row_off: int) -> None:
        self._canvas.add(rows, row_off)
        if row_off + len(rows) >= self._height:
            self._future = self._pool.submit(self._draw)

    def _draw(self) -> None:
        save_png(blend_preview(self._canvas.classes, self._classes, self._image_path), self._out)

    def result(self) -> None:
        """Wait for the preview to be written; raise what drawing it raised."""
        assert self._future is not None, "the preview saw no last strip"
        self._future.result()


def _write_polygons(
    job: HealthJob,
    strips: Iterable[Strip],
    sieved: Path,
    geojson: Path | None,
    gpkg: Path | None,
    preview: _BackgroundPreview | None = None,
    indices: IndexReader | None = None,
) -> tuple[int, int, dict[str, float | None]]:
    """Sieve ``strips`` into ``sieved`` and vectorise them into the given files, in one pass.

    Sieved strips also go to ``preview``; ``indices`` are averaged per polygon. Returns
    the number of polygons, how many of them the GeoJSON left out because they cannot
    be projected to WGS84, and each index's mean over every polygon's pixels.
    """
    grid, options = job.grid, job.options
    profile = {
        **job.raster.profile,
        "driver": "GTiff",
        "count": 1,
        "dtype": "uint8",
        "nodata": NODATA,
    }
    names = indices.names if indices is not None else ()
    polygons = StripPolygons(
        grid.height,
        grid.width,
        options.block_size,
        indices.read if indices is not None else None,
        len(names),
    )
    value_sum = np.zeros(len(names))
    value_count = np.zeros(len(names))

    def pixel_batches(dst: rasterio.io.DatasetWriter) -> Iterator[PolygonBatch]:
        for strip in strips:
            core = sieve_strip(strip, job.sieve_px, options.block_size)
            dst.write(core, 1, window=Window(0, strip.row_off, grid.width, strip.height))
            if preview is not None:
                preview.add(core, strip.row_off)
            yield polygons.add(core, strip.confidence, strip.row_off)

    with contextlib.ExitStack() as stack:
        dst = stack.enter_context(rasterio.open(sieved, "w", **profile))
        writers = _polygon_writers(stack, job, geojson, gpkg, names)
        count = 0
        simplify_px = options.simplify_m / job.pixel_m
        for batch in finish_polygons(pixel_batches(dst), grid.transform, simplify_px):
            frame = polygon_attributes(batch, job.crs, job.raster.classes, job.fields, names)
            for writer in writers:
                writer.write(frame)
            count += len(frame)
            value_sum += batch.value_sum.sum(axis=0)
            value_count += batch.value_count.sum(axis=0)
        unprojectable = sum(w.unprojectable for w in writers if isinstance(w, GeoJSONWriter))
    means = {
        name: round(float(value_sum[k] / value_count[k]), 4) if value_count[k] else None
        for k, name in enumerate(names)
    }
    return count, unprojectable, means


@dataclass(frozen=True)
class _Statistics:
    """The health statistics of a sieved class raster: the whole raster's class areas,
    and the per-field table and zone layer when asked for."""

    areas: np.ndarray
    fields: list[dict] | None
    zones: gpd.GeoDataFrame | None


def _statistics(job: HealthJob, sieved: Path, indices: IndexReader | None) -> _Statistics:
    """Class areas of the whole raster, its fields and its grid cells, in one read of the
    sieved raster (and one of the image for the vegetation indices)."""
    grid, options, classes = job.grid, job.options, job.raster.classes
    zonings = [WHOLE]
    if job.fields is not None:
        zonings.append(Zoning(field_labeller(job.fields, grid.transform), len(job.fields.ids)))
    cells = None
    if options.grid_m is not None:
        cells = make_grid(job.crs, grid.transform, grid.width, grid.height, options.grid_m)
        zonings.append(Zoning(grid_labeller(cells, job.crs, grid.transform), cells.n_cells))
    areas = zone_class_areas(sieved, len(classes), zonings, block_size=options.block_size)
    means: list[np.ndarray | None] = [None] * len(zonings)
    if indices is not None and len(zonings) > 1:
        means[1:] = zone_index_means(
            indices, grid.height, grid.width, zonings[1:], block_size=options.block_size
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
    with GpkgLayerWriter(gpkg, ZONE_LAYER, zones.iloc[:0]) as writer:
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
        :func:`agriseg.health.health_summary`, plus ``min_area_m2``, ``sieve_px``
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
    strips: Iterable[Strip],
    image_path: Path | None,
    out_dir: Path,
    stem: str,
) -> dict[str, Any]:
    options = job.options
    classes = job.raster.classes
    indices = IndexReader.of_file(image_path)
    paths = health_paths(out_dir, stem)
    sieved = temporary_name(output_paths(out_dir, stem, ("sieved",))["sieved"])
    written: dict[str, str] = {}
    result: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as outer:
            preview = None
            if options.preview:
                # Entered before the pool: on the way out the drawing thread finishes
                # first, then the PNG appears (or, after an error, is removed).
                preview_tmp = outer.enter_context(atomic_output(paths["preview"]))
                pool = outer.enter_context(ThreadPoolExecutor(1, "agriseg-preview"))
                preview = _BackgroundPreview(job.raster, image_path, preview_tmp, pool)
            with contextlib.ExitStack() as stack:
                tmp = {
                    f: stack.enter_context(
                        geopackage_output(paths[f]) if f == "gpkg" else atomic_output(paths[f])
                    )
                    for f in options.formats
                }
                count, unprojectable, index_means = _write_polygons(
                    job, strips, sieved, tmp.get("geojson"), tmp.get("gpkg"), preview, indices
                )
                stats = _statistics(job, sieved, indices)
                if "gpkg" in tmp:
                    styles = {POLYGON_LAYER: class_style(classes)}
                    if stats.zones is not None:
                        result["zones"] = _write_zones(stats.zones, tmp["gpkg"], options)
                        styles[ZONE_LAYER] = zone_style()
                    write_layer_styles(tmp["gpkg"], styles)
            for fmt in options.formats:
                written[fmt] = str(paths[fmt])
            if options.formats:
                write_text_atomic(paths["qml"], class_style(classes))
                written["qml"] = str(paths["qml"])
            health = health_summary(stats.areas, classes)
            result["health"] = {
                **health,
                "min_area_m2": options.min_area_m2,
                "sieve_px": job.sieve_px,
                "polygons": count,
                "unprojectable_polygons": unprojectable,
                "vegetation_indices": index_means,
            }
            if unprojectable:
                kept = (
                    f"{paths['gpkg'].name} keeps them in the raster's CRS"
                    if "gpkg" in options.formats
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
        with contextlib.suppress(FileNotFoundError):
            sieved.unlink()
    result["outputs"] = written
    return result

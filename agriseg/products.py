"""Field-health products of a segmented raster: polygons, statistics, zones, styles, preview.

One entry point, :func:`write_health_products`, runs everything after the class
raster exists: sieve to the minimum mapping unit, vectorise, attribute and write
the polygons, compute the health summary, per-field statistics and zone grid,
style the layers for QGIS and draw the preview. Every file appears under its final
name only once complete.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyproj import CRS

from agriseg.areas import geometry_area_perimeter_m, lonlat_points, pixel_size_m
from agriseg.atomic import atomic_output, temporary_name, write_text_atomic
from agriseg.classes import CLASS_NAMES
from agriseg.errors import InputError
from agriseg.health import class_areas_m2, health_summary, raster_crs
from agriseg.preview import write_preview
from agriseg.qgis import class_style, write_layer_styles, zone_style
from agriseg.vector_outputs import (
    GeoJSONWriter,
    GpkgLayerWriter,
    geopackage_output,
    rounding_keeps_lattice_polygons_valid,
)
from agriseg.vectorize import PolygonBatch, sieve_raster, sieve_size, vectorize
from agriseg.zones import Fields, assign_fields, field_statistics, grid_zones, read_fields

VectorFormat = Literal["geojson", "gpkg"]

#: Vector formats ``write_health_products`` can write.
VECTOR_FORMATS: tuple[VectorFormat, ...] = ("geojson", "gpkg")

#: Layer names inside ``<stem>.health.gpkg``.
POLYGON_LAYER = "health"
ZONE_LAYER = "zones"


@dataclass(frozen=True)
class HealthOptions:
    """How to turn a class raster into field-health products.

    Attributes:
        min_area_m2: Minimum mapping unit: regions smaller than this are merged into
            their largest neighbour before vectorising. The default, 0.01 m²
            (10 × 10 cm), removes speckle (at 1–3 cm resolution, clumps of up to
            100 / 11 px) while keeping a single young weed or diseased plant.
        simplify_m: Coverage-simplification tolerance in metres (0: exact pixel edges).
        formats: Vector files to write (``geojson``, ``gpkg``).
        fields: Field-boundary polygons for per-field statistics, or None.
        grid_m: Management-zone cell size in metres, or None for no grid.
        preview: Whether to draw ``<stem>.preview.png``.
        block_size: Edge of the processing blocks in pixels (memory grows with its square).
    """

    min_area_m2: float = 0.01
    simplify_m: float = 0.0
    formats: tuple[VectorFormat, ...] = VECTOR_FORMATS
    fields: Path | None = None
    grid_m: float | None = None
    preview: bool = True
    block_size: int = 2048

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in VECTOR_FORMATS]
        if unknown:
            raise InputError(
                f"unknown --format {', '.join(map(str, unknown))}; "
                f"expected one or more of {', '.join(VECTOR_FORMATS)}"
            )
        if self.min_area_m2 < 0:
            raise InputError(f"--min-area {self.min_area_m2}: expected an area ≥ 0 m²")
        if self.simplify_m < 0:
            raise InputError(f"--simplify {self.simplify_m}: expected a distance ≥ 0 m")
        if self.grid_m is not None and not self.grid_m > 0:
            raise InputError(f"--grid {self.grid_m}: expected a cell size > 0 m")
        if self.grid_m is not None and "gpkg" not in self.formats:
            raise InputError("--grid writes a GeoPackage layer `zones`; add gpkg to --format")
        if self.block_size < 16:
            raise InputError(f"block size {self.block_size}: expected at least 16 px")


def health_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where the health products of input ``stem`` are written."""
    return {
        "geojson": out_dir / f"{stem}.health.geojson",
        "gpkg": out_dir / f"{stem}.health.gpkg",
        "qml": out_dir / f"{stem}.health.qml",
        "preview": out_dir / f"{stem}.preview.png",
    }


def _template(crs: CRS, with_fields: bool) -> gpd.GeoDataFrame:
    columns: dict[str, pd.Series] = {
        "class": pd.Series([], dtype=object),
        "class_id": pd.Series([], dtype="int32"),
        "area_m2": pd.Series([], dtype="float64"),
        "perimeter_m": pd.Series([], dtype="float64"),
        "mean_confidence": pd.Series([], dtype="float64"),
        "lon": pd.Series([], dtype="float64"),
        "lat": pd.Series([], dtype="float64"),
    }
    if with_fields:
        columns["field_id"] = pd.Series([], dtype=object)
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def polygon_attributes(batch: PolygonBatch, crs: CRS, fields: Fields | None) -> gpd.GeoDataFrame:
    """The health-polygon table of one batch (geometries in ``crs``)."""
    area, perimeter = geometry_area_perimeter_m(batch.geometry, crs)
    centroid = shapely.centroid(batch.geometry)
    lon, lat = lonlat_points(shapely.get_x(centroid), shapely.get_y(centroid), crs)
    columns: dict[str, Any] = {
        "class": np.array(CLASS_NAMES, dtype=object)[batch.class_id],
        "class_id": batch.class_id.astype("int32"),
        "area_m2": np.round(area, 6),
        "perimeter_m": np.round(perimeter, 6),
        "mean_confidence": np.round(batch.mean_confidence, 3),
        "lon": np.round(lon, 7),
        "lat": np.round(lat, 7),
    }
    if fields is not None:
        columns["field_id"] = assign_fields(batch.geometry, fields)
    return gpd.GeoDataFrame(columns, geometry=batch.geometry, crs=crs)


def _write_polygons(
    source: Path,
    confidence_path: Path | None,
    crs: CRS,
    transform: Affine,
    size: tuple[int, int],
    simplify_px: float,
    options: HealthOptions,
    fields: Fields | None,
    geojson: Path | None,
    gpkg: Path | None,
) -> int:
    """Vectorise ``source`` into the given files; return the number of polygons."""
    with contextlib.ExitStack() as stack:
        writers: list[GeoJSONWriter | GpkgLayerWriter] = []
        if geojson is not None:
            snap = simplify_px > 0 or not rounding_keeps_lattice_polygons_valid(
                crs, transform, *size
            )
            writers.append(stack.enter_context(GeoJSONWriter(geojson, crs, snap_safely=snap)))
        if gpkg is not None:
            template = _template(crs, fields is not None)
            writers.append(stack.enter_context(GpkgLayerWriter(gpkg, POLYGON_LAYER, template)))
        count = 0
        for batch in vectorize(
            source, confidence_path, block_size=options.block_size, simplify_px=simplify_px
        ):
            frame = polygon_attributes(batch, crs, fields)
            for writer in writers:
                writer.write(frame)
            count += len(frame)
    return count


def _write_zones(source: Path, gpkg: Path, options: HealthOptions) -> dict[str, Any]:
    """Add the management-zone layer to ``gpkg``; return its summary."""
    assert options.grid_m is not None
    zones = grid_zones(source, options.grid_m, options.block_size)
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
    ``options.min_area_m2``.

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
        ``zones`` (cell count, size and CRS, with ``--grid``) and ``outputs``
        (paths written, as text).

    Raises:
        InputError: The class raster has no CRS, or the fields file is unusable.
        OutputError: An output could not be written.
    """
    options = options or HealthOptions()
    classes_path, out_dir = Path(classes_path), Path(out_dir)
    with rasterio.open(classes_path) as src:
        crs = raster_crs(src, classes_path)
        transform, size = src.transform, (src.height, src.width)
    fields = read_fields(options.fields, crs) if options.fields is not None else None
    paths = health_paths(out_dir, stem)
    pixel_m = pixel_size_m(crs, transform, size[1], size[0])
    sieve_px = sieve_size(options.min_area_m2, pixel_m**2)
    sieved = temporary_name(out_dir / f"{stem}.sieved.tif")
    written: dict[str, str] = {}
    result: dict[str, Any] = {}
    try:
        source = classes_path
        if sieve_px > 1:
            sieve_raster(classes_path, sieved, sieve_px, options.block_size)
            source = sieved
        simplify_px = options.simplify_m / pixel_m
        with contextlib.ExitStack() as stack:
            tmp = {
                f: stack.enter_context(
                    geopackage_output(paths[f]) if f == "gpkg" else atomic_output(paths[f])
                )
                for f in options.formats
            }
            count = _write_polygons(
                source,
                confidence_path,
                crs,
                transform,
                size,
                simplify_px,
                options,
                fields,
                tmp.get("geojson"),
                tmp.get("gpkg"),
            )
            if "gpkg" in tmp:
                styles = {POLYGON_LAYER: class_style()}
                if options.grid_m is not None:
                    result["zones"] = _write_zones(source, tmp["gpkg"], options)
                    styles[ZONE_LAYER] = zone_style()
                write_layer_styles(tmp["gpkg"], styles)
        for fmt in options.formats:
            written[fmt] = str(paths[fmt])
        if options.formats:
            write_text_atomic(paths["qml"], class_style())
            written["qml"] = str(paths["qml"])
        health = health_summary(class_areas_m2(source, block_size=options.block_size)[0])
        result["health"] = {
            **health,
            "min_area_m2": options.min_area_m2,
            "sieve_px": sieve_px,
            "polygons": count,
        }
        if fields is not None:
            result["fields"] = field_statistics(source, fields, options.block_size)
        if options.preview:
            write_preview(source, image_path, paths["preview"])
            written["preview"] = str(paths["preview"])
    finally:
        with contextlib.suppress(FileNotFoundError):
            sieved.unlink()
    result["outputs"] = written
    return result

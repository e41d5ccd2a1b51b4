"""An empty labelling layer for QGIS, where users draw the polygons a model learns from.

``agriseg labels init SURVEY.tif`` writes a GeoPackage with one polygon layer,
``labels``, in the survey's CRS, with a text field naming the class. Its default
QGIS style (stored in the GeoPackage, see :mod:`agriseg.health.qgis`) colours polygons by
class and makes the class field a drop-down of the model's class names, so drawing
polygons is all labelling takes. Whatever is not drawn stays unlabelled: training
and scoring ignore it (:mod:`agriseg.learning.labels`).

An operation of its own (``agriseg labels init``), beside ``run``: it reads a survey
and writes a styled GeoPackage, with the styles of :mod:`agriseg.health.qgis`.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from rasterio.errors import RasterioIOError

from agriseg.classes import ClassList
from agriseg.errors import InputError, RasterReadError
from agriseg.health.qgis import labelling_style, write_layer_styles
from agriseg.io.atomic import atomic_output
from agriseg.io.geopackage import write_layer
from agriseg.io.raster import georeferenced, open_dataset

#: Name of the polygon layer in a labelling GeoPackage.
LABEL_LAYER = "labels"

#: Field holding each polygon's class name (``--label-column`` reads it by default).
LABEL_COLUMN = "class"


def default_label_path(survey: Path) -> Path:
    """``field.tif`` → ``field.labels.gpkg`` beside it (pairs with it by name)."""
    return survey.with_name(f"{survey.stem}.labels.gpkg")


def init_label_layer(survey: Path, out: Path | None, classes: ClassList) -> Path:
    """Write an empty labelling GeoPackage for ``survey``; returns its path.

    Raises:
        InputError: ``survey`` has no CRS, ``out`` is not a ``.gpkg`` or already
            exists (it may hold someone's labels).
    """
    survey = Path(survey)
    out = Path(out) if out is not None else default_label_path(survey)
    if out.suffix.lower() != ".gpkg":
        raise InputError(f"--out {out}: a labelling layer is a GeoPackage; name a .gpkg file")
    if out.exists():
        raise InputError(
            f"{out}: already exists and may hold labels; give another --out or delete it"
        )
    if not survey.is_file():
        raise InputError(f"{survey}: no such survey raster")
    try:
        src = open_dataset(survey)
    except RasterioIOError as exc:
        raise RasterReadError(f"{survey}: not a readable raster ({exc})") from None
    with src:
        if not georeferenced(src) or src.crs is None:
            raise InputError(
                f"{survey}: has no CRS, so polygons cannot be placed on it; label plain "
                "photos with mask images instead (see `agriseg train --help`)"
            )
        crs = src.crs
    frame = gpd.GeoDataFrame(
        {LABEL_COLUMN: pd.Series([], dtype=object)}, geometry=gpd.GeoSeries([], crs=crs)
    )
    with atomic_output(out) as tmp:
        write_layer(frame, tmp, LABEL_LAYER, geometry_type="Polygon")
        write_layer_styles(tmp, {LABEL_LAYER: labelling_style(classes, LABEL_COLUMN)})
    return out

"""A generated survey's files: the image and label rasters, label polygons, plant points.

Each file is written atomically; the label polygons are the label raster vectorised
(one polygon per connected region of a class).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features
from rasterio.enums import ColorInterp

from agriseg.classes import NODATA
from agriseg.io.atomic import atomic_output
from agriseg.io.geopackage import write_layer
from agriseg.learning.synthetic import BAND_NAMES, Survey, SurveyParams


@dataclass(frozen=True)
class SurveyPaths:
    """Files written by :func:`write_survey`."""

    image: Path
    labels: Path
    polygons: Path
    plants: Path


def label_polygons(survey: Survey) -> gpd.GeoDataFrame:
    """Polygons of the label raster, one per connected patch of a class.

    Args:
        survey: The survey to vectorise.

    Returns:
        Columns ``class`` (name), ``class_id`` and ``geometry``, in the survey's CRS.
    """
    names = {c.id: c.name for c in survey.classes}
    records = [
        (names[int(value)], int(value), geom)
        for geom, value in features.shapes(
            survey.labels, mask=survey.labels != NODATA, transform=survey.transform
        )
    ]
    frame = gpd.GeoDataFrame.from_features(
        [
            {"type": "Feature", "properties": {"class": n, "class_id": i}, "geometry": g}
            for n, i, g in records
        ],
        crs=survey.crs,
        columns=["class", "class_id", "geometry"],
    )
    frame["class_id"] = frame["class_id"].astype(np.uint8)
    return frame


def write_survey(survey: Survey, out_dir: Path, stem: str) -> SurveyPaths:
    """Write a survey as GeoTIFFs and a GeoPackage, each file atomically.

    Writes ``<stem>.tif`` (tiled, deflate, band colour interpretation set),
    ``<stem>.labels.tif`` (uint8 class ids, nodata 255, class colour table and
    ``class_N`` tags), ``<stem>.labels.gpkg`` (layer ``labels``, column ``class``) and
    ``<stem>.plants.gpkg`` (layer ``plants``: the centre of every crop plant inside the
    image, see :meth:`PlantTruth.points`).

    Args:
        survey: The survey.
        out_dir: Existing or new folder to write into.
        stem: File name stem.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = SurveyPaths(
        out_dir / f"{stem}.tif",
        out_dir / f"{stem}.labels.tif",
        out_dir / f"{stem}.labels.gpkg",
        out_dir / f"{stem}.plants.gpkg",
    )
    bands, h, w = survey.image.shape
    common = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "crs": survey.crs,
        "transform": survey.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    tags = {
        f"synthetic_{f.name}": str(getattr(survey.params, f.name)) for f in fields(SurveyParams)
    }
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    interp += [ColorInterp.undefined] * (bands - 3)
    with (
        atomic_output(paths.image) as tmp,
        rasterio.open(
            tmp,
            "w",
            count=bands,
            dtype=survey.image.dtype,
            predictor=2,
            photometric="RGB" if bands == 3 else "MINISBLACK",
            **common,
        ) as dst,
    ):
        dst.write(survey.image)
        dst.colorinterp = interp
        for i, name in enumerate(BAND_NAMES[:bands], start=1):
            dst.set_band_description(i, name)
        dst.update_tags(**tags)
    with (
        atomic_output(paths.labels) as tmp,
        rasterio.open(tmp, "w", count=1, dtype="uint8", nodata=NODATA, **common) as dst,
    ):
        dst.write(survey.labels, 1)
        dst.write_colormap(1, survey.classes.colormap())
        dst.update_tags(**survey.classes.tags())
    with atomic_output(paths.polygons) as tmp, warnings.catch_warnings():
        # The temporary's name lacks the .gpkg extension only until it is renamed.
        warnings.filterwarnings("ignore", "The filename extension should be 'gpkg'")
        write_layer(label_polygons(survey), tmp, "labels")
    with atomic_output(paths.plants) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The filename extension should be 'gpkg'")
        write_layer(survey.plants.points(survey.crs), tmp, "plants")
    return paths

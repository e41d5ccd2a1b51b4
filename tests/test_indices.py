"""Vegetation indices per polygon, field, zone and survey, against plain numpy."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from conftest import UTM, write_raster
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from agriseg.classes import NODATA
from agriseg.health.indices import IndexReader, available_indices
from agriseg.health.products import HealthOptions, write_health_products

MS_NAMES = ("blue", "green", "red", "red_edge", "nir")


def _multispectral(path: Path, data: np.ndarray, names: tuple[str, ...]) -> Path:
    write_raster(path, data, nodata=0, block=16)
    with rasterio.open(path, "r+") as dst:
        for k, name in enumerate(names, start=1):
            dst.set_band_description(k, name)
    return path


def _scene(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 5-band uint16 image (blue, green, red, red edge, NIR) and its class raster."""
    rng = np.random.default_rng(7)
    image = rng.integers(200, 6000, (5, 48, 64)).astype("uint16")
    classes = np.zeros((48, 64), dtype="uint8")
    classes[:, 32:] = 1
    classes[10:20, 5:15] = 2
    classes[40:, :8] = NODATA
    image[:, 40:, :8] = 0  # nodata in the image: where the class raster has none
    _multispectral(tmp_path / "f.tif", image, MS_NAMES)
    write_raster(tmp_path / "f.classes.tif", classes[None], nodata=NODATA, block=16)
    return image.astype("float64"), classes


def test_indices_available_follow_the_band_names() -> None:
    assert available_indices(MS_NAMES) == ("ndvi", "ndre")
    assert available_indices(("red", "green", "nir")) == ("ndvi",)
    assert available_indices(("red", "green", "blue")) == ("exg",)
    assert available_indices(("band1", "band2")) == ()


def test_polygon_field_zone_and_survey_means_match_numpy(tmp_path: Path) -> None:
    image, classes = _scene(tmp_path)
    blue, green, red, red_edge, nir = image
    with np.errstate(invalid="ignore"):  # nodata pixels are 0 in every band
        ndvi = (nir - red) / (nir + red)
        ndre = (nir - red_edge) / (nir + red_edge)
    valid = classes != NODATA
    fields = gpd.GeoDataFrame(
        {"field_id": ["west", "east"]},
        geometry=[
            shapely.box(500000, 5299999.04, 500000.5, 5300000),
            shapely.box(500000.5, 5299999.04, 500001.28, 5300000),
        ],
        crs=UTM,
    )
    fields.to_file(tmp_path / "fields.gpkg")
    summary = write_health_products(
        tmp_path / "f.classes.tif",
        None,
        tmp_path / "f.tif",
        tmp_path,
        "f",
        HealthOptions(
            min_area_m2=0,
            fields=tmp_path / "fields.gpkg",
            grid_m=0.32,
            block_size=16,
            polygons="all",
            whole_regions=True,
        ),
    )
    # Survey: every valid pixel.
    means = summary["health"]["vegetation_indices"]
    assert means["ndvi"] == pytest.approx(ndvi[valid].mean(), abs=1e-4)
    assert means["ndre"] == pytest.approx(ndre[valid].mean(), abs=1e-4)
    # Polygons: the pixels of each region.
    polygons = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    assert {"mean_ndvi", "mean_ndre"} <= set(polygons.columns)
    weed = polygons[polygons["class"] == "weed"].iloc[0]
    assert weed["mean_ndvi"] == pytest.approx(ndvi[10:20, 5:15].mean(), abs=1e-4)
    crop = polygons[polygons["class"] == "crop"].iloc[0]
    assert crop["mean_ndre"] == pytest.approx(ndre[:, 32:].mean(), abs=1e-4)
    geojson = json.loads((tmp_path / "f.health.geojson").read_text())
    assert "mean_ndvi" in geojson["features"][0]["properties"]
    # Fields: west is columns 0-24 (0.5 m at 2 cm), east 25-63.
    west, east = summary["fields"]
    assert west["mean_ndvi"] == pytest.approx(ndvi[:, :25][valid[:, :25]].mean(), abs=1e-4)
    assert east["mean_ndre"] == pytest.approx(ndre[:, 25:].mean(), abs=1e-4)
    # Zones: 0.32 m cells are 16 x 16 px aligned with the raster's corner.
    zones = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="zones")
    for _, zone in zones.iterrows():
        r, c = int(zone["row"]), int(zone["col"])
        cell = (slice(16 * r, 16 * r + 16), slice(16 * c, 16 * c + 16))
        assert zone["mean_ndvi"] == pytest.approx(ndvi[cell][valid[cell]].mean(), abs=1e-4)


def test_rgb_surveys_get_excess_green(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (3, 32, 32)).astype("uint8")
    write_raster(
        tmp_path / "rgb.tif",
        image,
        colorinterp=(ColorInterp.blue, ColorInterp.green, ColorInterp.red),
        block=16,
    )
    reader = IndexReader.of_file(tmp_path / "rgb.tif")
    assert reader is not None and reader.names == ("exg",)
    b, g, r = image.astype("float64")
    total = r + g + b
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(total > 0, (2 * g - r - b) / total, np.nan)
    np.testing.assert_allclose(reader.read(Window(0, 0, 32, 32))[0], expected, atol=1e-6)


def test_images_without_named_bands_get_no_index(tmp_path: Path) -> None:
    write_raster(tmp_path / "grey.tif", np.zeros((2, 16, 16), dtype="uint8"), block=16)
    assert IndexReader.of_file(tmp_path / "grey.tif") is None
    assert IndexReader.of_file(None) is None

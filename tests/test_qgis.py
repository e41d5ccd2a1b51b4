"""QGIS styling: .qml sidecar and GeoPackage layer_styles, read back with GDAL."""

from __future__ import annotations

import re
import sqlite3
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from conftest import write_raster

from agriseg.classes import CLASSES, NODATA, ClassList
from agriseg.health.products import HealthOptions, health_paths, write_health_products
from agriseg.health.qgis import class_style, write_layer_styles, zone_style


def check_class_style(qml: str, classes: ClassList = CLASSES) -> None:
    root = ET.fromstring(qml.split("\n", 1)[1])  # after the DOCTYPE line
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class"
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == [c.name for c in classes]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for category, cls in zip(categories, classes, strict=True):
        layer = symbols[category.get("symbol")].find("layer")
        assert layer is not None and layer.get("class") == "SimpleFill"
        colour = layer.find("Option/Option[@name='color']")
        assert colour is not None and colour.get("value") == "{},{},{},255".format(*cls.colour)
        assert layer.find("prop[@k='color']").get("v") == colour.get("value")


def test_class_style_is_a_categorized_renderer() -> None:
    check_class_style(class_style(CLASSES))


def test_zone_style_is_graduated_on_weed_pressure() -> None:
    renderer = ET.fromstring(zone_style().split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "weed_pressure"
    ranges = renderer.findall("ranges/range")
    assert float(ranges[0].get("lower")) == 0 and float(ranges[-1].get("upper")) == 1


@pytest.fixture
def products(tmp_path: Path) -> dict[str, Path]:
    data = np.random.default_rng(0).integers(0, 4, (8, 8), dtype="uint8").repeat(6, 0).repeat(6, 1)
    data[:6] = NODATA
    write_raster(tmp_path / "f.classes.tif", data[None], nodata=NODATA, block=16)
    write_health_products(
        tmp_path / "f.classes.tif",
        None,
        None,
        tmp_path,
        "f",
        HealthOptions(grid_m=0.5, preview=False, block_size=16),
    )
    return health_paths(tmp_path, "f")


def test_sidecar_styles_both_files(products: dict[str, Path]) -> None:
    # QGIS looks for the layer file's name with .qml in place of its extension.
    assert products["geojson"].with_suffix(".qml") == products["qml"]
    assert products["gpkg"].with_suffix(".qml") == products["qml"]
    check_class_style(products["qml"].read_text(encoding="utf-8"))
    for path, layer in ((products["geojson"], None), (products["gpkg"], "health")):
        info = pyogrio.read_info(path, layer=layer)
        assert info["features"] > 0 and "class" in list(info["fields"])


def test_gpkg_holds_default_styles(products: dict[str, Path]) -> None:
    styles = pyogrio.read_dataframe(products["gpkg"], layer="layer_styles")
    assert sorted(styles["f_table_name"]) == ["health", "zones"]
    assert styles["useAsDefault"].all()
    for row in styles.itertuples():
        info = pyogrio.read_info(products["gpkg"], layer=row.f_table_name)
        assert row.f_geometry_column == info["geometry_name"]
        assert row.f_table_schema == "" and row.f_table_catalog == ""
    health = styles.set_index("f_table_name").loc["health", "styleQML"]
    check_class_style(health)


def test_layer_styles_update_time_is_geopackage_datetime(tmp_path: Path) -> None:
    # GeoPackage DATETIME is "YYYY-MM-DDTHH:MM:SS.SSSZ"; QGIS's GDAL warns on anything else.
    path = tmp_path / "styled.gpkg"
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32633")
    pyogrio.write_dataframe(frame, path, layer="health", driver="GPKG")
    write_layer_styles(path, {"health": class_style(CLASSES)})
    with sqlite3.connect(path) as db:
        (stored,) = db.execute("SELECT update_time FROM layer_styles").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stored), stored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyogrio turns GDAL warnings into Python warnings
        styles = pyogrio.read_dataframe(path, layer="layer_styles")
    assert str(styles["update_time"].dt.tz) == "UTC"

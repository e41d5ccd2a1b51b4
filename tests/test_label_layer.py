"""`agriseg labels init`: a GeoPackage QGIS opens as a ready labelling layer; labels
drawn in it (sparse polygons) train a model of exactly the drawn classes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from conftest import UTM, UTM_TRANSFORM, field_image, write_raster
from rasterio.windows import Window
from shapely.geometry import box
from test_qgis import qgis_python

from agriseg.classes import DEFAULT_CLASSES, ClassList
from agriseg.io.grid import Grid
from agriseg.label_layer import LABEL_LAYER, init_label_layer
from agriseg.learning.labels import Labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _style(gpkg: Path) -> tuple[str, ET.Element]:
    """The default style of the labels layer, read with sqlite3 (not through GDAL)."""
    with sqlite3.connect(gpkg) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
    assert len(rows) == 1
    table, geometry, default, qml = rows[0]
    assert (table, geometry, default) == (LABEL_LAYER, "geom", 1)
    return qml, ET.fromstring(qml.split("\n", 1)[1])


def test_labels_init_writes_a_styled_empty_layer(tmp_path: Path, run_cli, capsys) -> None:
    survey = write_raster(tmp_path / "field.tif", field_image(64, 64))
    assert run_cli("labels", "init", survey, "--classes", "soil,peanut:crop,grass:weed") == 0
    gpkg = tmp_path / "field.labels.gpkg"
    assert str(gpkg) in capsys.readouterr().out
    info = pyogrio.read_info(gpkg, layer=LABEL_LAYER)
    assert info["crs"] == UTM and info["features"] == 0
    assert info["geometry_type"] == "Polygon" and list(info["fields"]) == ["class"]

    _, root = _style(gpkg)
    assert {"Symbology", "Fields", "Forms"} <= set(root.get("styleCategories", "").split("|"))
    field = root.find("fieldConfiguration/field[@name='class']")
    assert field is not None
    widget = field.find("editWidget")
    assert widget is not None and widget.get("type") == "ValueMap"
    choices = widget.findall("config/Option/Option[@name='map']/Option/Option")
    assert [(o.get("name"), o.get("value")) for o in choices] == [
        ("soil", "soil"),
        ("peanut", "peanut"),
        ("grass", "grass"),
    ]
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "class")
    classes = ClassList.parse("soil,peanut:crop,grass:weed")
    colours = {}
    for category in renderer.findall("categories/category"):
        symbol = renderer.find(f"symbols/symbol[@name='{category.get('symbol')}']")
        assert symbol is not None
        fill = symbol.find("layer/Option/Option[@name='color']")
        assert fill is not None
        colours[category.get("value")] = tuple(int(v) for v in fill.get("value").split(",")[:3])
    assert colours == {c.name: c.colour for c in classes}
    constraint = root.find("constraints/constraint[@field='class']")
    assert constraint is not None and constraint.get("notnull_strength") == "1"

    # Never overwrites a layer that may hold someone's labels.
    assert run_cli("labels", "init", survey) == 2
    assert "already exists" in capsys.readouterr().err


def test_labels_init_refuses_plain_photos(tmp_path: Path, run_cli, capsys) -> None:
    photo = write_raster(tmp_path / "photo.tif", field_image(32, 32), crs=None)
    assert run_cli("labels", "init", photo) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no CRS" in err and "mask images" in err
    assert not (tmp_path / "photo.labels.gpkg").exists()


LABEL_CHECK = """
import json, sys
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(sys.argv[1] + "|layername=labels", "labels", "ogr")
setup = layer.editorWidgetSetup(layer.fields().indexFromName("class"))
renderer = layer.renderer()
print(json.dumps({
    "valid": layer.isValid(),
    "crs": layer.crs().authid(),
    "widget": setup.type(),
    "choices": [[k, v] for entry in setup.config()["map"] for k, v in entry.items()],
    "renderer": renderer.type(),
    "colours": {c.value(): list(c.symbol().color().getRgb()[:3]) for c in renderer.categories()},
    "not_null": bool(layer.fields().field("class").constraints().constraints() & 1),
}))
"""


def test_qgis_opens_it_with_the_drop_down_and_colours(tmp_path: Path) -> None:
    python = qgis_python()
    classes = ClassList.parse("soil,crop,grass:weed:#e628a0")
    survey = write_raster(tmp_path / "field.tif", field_image(32, 32))
    gpkg = init_label_layer(survey, None, classes)
    result = subprocess.run(
        [python, "-c", LABEL_CHECK, str(gpkg)],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["valid"] and found["crs"] == UTM
    assert found["widget"] == "ValueMap"
    assert found["choices"] == [[c.name, c.name] for c in classes]
    assert found["renderer"] == "categorizedSymbol"
    assert found["colours"] == {c.name: list(c.colour) for c in classes}
    assert found["not_null"]


def test_sparse_polygons_train_a_model_of_the_drawn_classes(tmp_path: Path, run_cli) -> None:
    # A 256 px survey; three small patches are drawn, the rest stays unlabelled.
    survey = write_raster(tmp_path / "field.tif", field_image(256, 256))
    assert run_cli("labels", "init", survey) == 0
    gpkg = tmp_path / "field.labels.gpkg"
    x0, y0, px = UTM_TRANSFORM.c, UTM_TRANSFORM.f, UTM_TRANSFORM.a

    def patch(col: int, row: int, size: int = 40):
        return box(x0 + col * px, y0 - (row + size) * px, x0 + (col + size) * px, y0 - row * px)

    drawn = gpd.GeoDataFrame(
        {"class": ["soil", "crop", "weed", "crop"]},
        geometry=[patch(10, 10), patch(60, 10), patch(10, 60), patch(60, 60)],
        crs=UTM,
    )
    drawn.to_file(gpkg, layer=LABEL_LAYER, mode="a")  # what QGIS does when saving edits
    grid = Grid.of_dataset(rasterio.open(survey))
    labels = Labels(gpkg, grid, DEFAULT_CLASSES)
    # Training reads only the image around the polygons (a chip's width beyond).
    assert labels.labelled_window(margin=32) == Window(0, 0, 132, 132)
    model = tmp_path / "mine"
    code = run_cli(
        "train", survey, "--labels", gpkg, "--out", model, "--epochs", "1", "--steps", "2",
        "--chip-size", "32", "--chips-per-step", "2", "--val-fraction", "0.25",
        "--val-block", "32", "--device", "cpu", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert code == 0
    meta = json.loads((model / "model.json").read_text())
    # The drawn classes only: diseased, offered in the drop-down, was never drawn.
    assert [c["name"] for c in meta["classes"]] == ["soil", "crop", "weed"]
    counts = meta["training"]["labelled_pixels"]
    assert counts == {"soil": 1600, "crop": 3200, "weed": 1600}
    assert meta["metrics"]["validation"]["labelled_pixels"] > 0
    assert run_cli("run", survey, "--model", model, "--out", tmp_path / "run", "--quiet") == 0
    assert (tmp_path / "run" / "field.classes.tif").exists()


def test_unclassified_polygons_are_named(tmp_path: Path, run_cli, capsys) -> None:
    survey = write_raster(tmp_path / "field.tif", field_image(64, 64))
    gpkg = init_label_layer(survey, None, ClassList.parse("soil,crop"))
    x0, y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    gpd.GeoDataFrame(
        {"class": ["crop", None]},
        geometry=[box(x0, y0 - 0.4, x0 + 0.4, y0), box(x0 + 0.5, y0 - 0.4, x0 + 0.9, y0)],
        crs=UTM,
    ).to_file(gpkg, layer=LABEL_LAYER, mode="a")
    code = run_cli("train", survey, "--labels", gpkg, "--out", tmp_path / "m", "--quiet")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "1 polygon(s) have no 'class'" in err
    assert np.all([not p.exists() for p in (tmp_path / "m",)])

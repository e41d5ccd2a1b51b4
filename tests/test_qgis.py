"""QGIS styling: .qml sidecars, GeoPackage layer_styles and version, the class raster's
class names; read back with GDAL (and QGIS where installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
import shapely
from conftest import GEOPACKAGE_1_2, field_image, geopackage_version, write_raster
from rio_cogeo.cogeo import cog_validate

from agriseg.classes import CLASSES, NODATA, ClassList
from agriseg.health.products import HealthOptions, health_paths, write_health_products
from agriseg.health.qgis import class_raster_style, class_style, write_layer_styles, zone_style
from agriseg.io.geopackage import write_layer


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


def palette(qml: str) -> list[tuple[int, str, str]]:
    """``(value, colour, label)`` of a paletted raster style's entries."""
    root = ET.fromstring(qml.split("\n", 1)[1])
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    assert renderer.get("band") == "1"
    return [
        (int(e.get("value", "")), e.get("color", ""), e.get("label", ""))
        for e in renderer.findall("colorPalette/paletteEntry")
    ]


def test_class_raster_style_lists_only_the_model_classes() -> None:
    classes = ClassList.build(["soil", "crop", "grass_weed", "thistle"])
    expected = [(c.id, "#{:02x}{:02x}{:02x}".format(*c.colour), c.name) for c in classes]
    assert palette(class_raster_style(classes)) == expected


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished ``agriseg run`` of a small survey."""
    from agriseg_cli.main import main

    tmp = tmp_path_factory.mktemp("run")
    image = write_raster(tmp / "survey.tif", field_image(80, 96))
    out = tmp / "out"
    assert main(["run", str(image), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    return out


def gdal_categories(path: Path) -> list[str]:
    """Band 1's category names as GDAL reads them: it writes what it read into a VRT."""
    vrt = path.with_name(path.name + ".vrt")
    rasterio.shutil.copy(path, vrt, driver="VRT")
    try:
        band = ET.parse(vrt).getroot().find("VRTRasterBand")
        assert band is not None
        return [c.text or "" for c in band.findall("CategoryNames/Category")]
    finally:
        vrt.unlink()


def test_the_class_raster_carries_its_class_names(run_dir: Path) -> None:
    classes_tif = run_dir / "survey.classes.tif"
    names = [c.name for c in CLASSES]
    assert gdal_categories(classes_tif) == names  # GDAL's own reading, through the COG
    assert cog_validate(classes_tif) == (True, [], [])
    # QGIS applies <file without extension>.qml: the paletted legend of the classes.
    qml = classes_tif.with_suffix(".qml")
    assert qml == run_dir / "survey.classes.qml"
    with rasterio.open(classes_tif) as src:
        colours = src.colormap(1)
        tags = src.tags()
    entries = palette(qml.read_text(encoding="utf-8"))
    assert [label for _, _, label in entries] == names
    for value, colour, label in entries:
        assert tags[f"class_{value}"] == label
        assert colour == "#{:02x}{:02x}{:02x}".format(*colours[value][:3])
    # Nothing of the COG copy's temporaries is left over.
    assert sorted(p.name for p in run_dir.iterdir() if "survey.classes" in p.name) == [
        "survey.classes.qml",
        "survey.classes.tif",
        "survey.classes.tif.aux.xml",
    ]


def test_geopackages_are_version_1_2(products: dict[str, Path], tmp_path: Path) -> None:
    assert geopackage_version(products["gpkg"]) == GEOPACKAGE_1_2  # with its layer_styles
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32633")
    write_layer(frame, tmp_path / "new.gpkg", "a")
    write_layer(frame, tmp_path / "new.gpkg", "a", append=True)
    assert geopackage_version(tmp_path / "new.gpkg") == GEOPACKAGE_1_2
    assert pyogrio.read_info(tmp_path / "new.gpkg", layer="a")["features"] == 2
    # What the GDAL in use writes unasked, for comparison: 1.4 from GDAL 3.8 on.
    pyogrio.write_dataframe(frame, tmp_path / "plain.gpkg", driver="GPKG")
    assert geopackage_version(tmp_path / "plain.gpkg")[1] >= 10200


def system_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (GDAL's command-line tools) is not installed")
    return path


def test_gdalinfo_lists_the_class_names(run_dir: Path) -> None:
    text = subprocess.run(
        [system_tool("gdalinfo"), str(run_dir / "survey.classes.tif")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = re.search(r"Categories:\n((?:\s+\d+: .*\n)+)", text)
    assert listed is not None, text
    found = re.findall(r"\s+(\d+): (.*)", listed.group(1))
    assert [name for _, name in found] == [c.name for c in CLASSES]


def ogrinfo_warnings(path: Path) -> list[str]:
    result = subprocess.run(
        [system_tool("ogrinfo"), "-so", "-al", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines() if "Warning" in line]


def test_the_system_gdal_reads_agrisegs_geopackages_without_warnings(
    products: dict[str, Path], tmp_path: Path
) -> None:
    assert ogrinfo_warnings(products["gpkg"]) == []
    version = subprocess.run(
        [system_tool("ogrinfo"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = (int(v) for v in re.findall(r"GDAL (\d+)\.(\d+)", version)[0])
    if (major, minor) < (3, 7):
        # That GDAL does warn about GDAL 3.10's default, GeoPackage 1.4.
        frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=3857)
        pyogrio.write_dataframe(frame, tmp_path / "plain.gpkg", driver="GPKG")
        if geopackage_version(tmp_path / "plain.gpkg")[1] >= 10400:
            assert any(
                "partially supported" in w for w in ogrinfo_warnings(tmp_path / "plain.gpkg")
            )


QGIS_CHECK = """
import json, sys
from qgis.core import QgsApplication, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
found = {}
for path in sys.argv[1:]:
    layer = QgsRasterLayer(path, "classes", "gdal")
    found[path] = {
        "valid": layer.isValid(),
        "renderer": layer.renderer().type(),
        "legend": [label for label, _ in layer.renderer().legendSymbologyItems()],
    }
print(json.dumps(found))
"""


def qgis_python() -> str:
    """A Python interpreter with QGIS's ``qgis.core`` (this one, or the system's)."""
    for python in dict.fromkeys((sys.executable, "/usr/bin/python3")):
        probe = subprocess.run([python, "-c", "import qgis.core"], capture_output=True)
        if Path(python).exists() and probe.returncode == 0:
            return python
    pytest.skip("QGIS's Python bindings (qgis.core) are not installed")


def test_qgis_legend_shows_the_class_names(run_dir: Path, tmp_path: Path) -> None:
    python = qgis_python()
    # Without the .qml, QGIS styles the raster from its colour table: GDAL's category
    # names label its entries, but all 256 of them are listed.
    bare = tmp_path / "bare.tif"
    shutil.copy(run_dir / "survey.classes.tif", bare)
    shutil.copy(run_dir / "survey.classes.tif.aux.xml", tmp_path / "bare.tif.aux.xml")
    styled = run_dir / "survey.classes.tif"
    result = subprocess.run(
        [python, "-c", QGIS_CHECK, str(styled), str(bare)],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    names = [c.name for c in CLASSES]
    assert found[str(styled)] == {"valid": True, "renderer": "paletted", "legend": names}
    assert found[str(bare)]["legend"][: len(names)] == names

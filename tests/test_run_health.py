"""Field-health products from the command line: polygons, fields, grid, styles, preview."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from conftest import UTM, UTM_TRANSFORM, field_image, write_raster
from rasterio.features import rasterize
from shapely.geometry import box

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")
PIXEL_AREA = 0.02 * 0.02
HEIGHT, WIDTH = 200, 240  # 4.0 m x 4.8 m at 2 cm


@pytest.fixture(scope="module")
def health_run(tmp_path_factory):
    from agriseg_cli.main import main

    tmp = tmp_path_factory.mktemp("health")
    path = write_raster(tmp / "plot.tif", field_image(HEIGHT, WIDTH, seed=5))
    x0, y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    fields = gpd.GeoDataFrame(
        {"field_id": ["north", "south"]},
        geometry=[box(x0, y0 - 2.0, x0 + 4.8, y0), box(x0, y0 - 4.0, x0 + 4.8, y0 - 2.0)],
        crs=UTM,
    ).to_crs("EPSG:4326")  # any CRS: agriseg reprojects
    fields.to_file(tmp / "fields.gpkg")
    out = tmp / "out"
    fields_path = str(tmp / "fields.gpkg")
    # Every class's polygons: the tests burn them back into the sieved raster.
    args = ["--fields", fields_path, "--grid", "1", "--polygons", "all"]
    code = main(["run", str(path), "--out", str(out), *args, *FAST])
    assert code == 0
    summary = json.loads((out / "plot.summary.json").read_text())
    return out, summary


def sieved_classes(out):
    polygons = gpd.read_file(out / "plot.health.gpkg", layer="health")
    return rasterize(
        zip(polygons.geometry, polygons.class_id, strict=True),
        out_shape=(HEIGHT, WIDTH),
        transform=UTM_TRANSFORM,
        fill=255,
        dtype="uint8",
    )


def test_all_products_are_written_and_styled(health_run):
    out, summary = health_run
    for name in ("health.geojson", "health.gpkg", "health.qml", "preview.png"):
        assert (out / f"plot.{name}").stat().st_size > 0
    assert pyogrio.read_info(out / "plot.health.geojson")["crs"] == "EPSG:4326"
    assert set(pyogrio.list_layers(out / "plot.health.gpkg")[:, 0]) >= {"health", "zones"}
    style = ElementTree.parse(out / "plot.health.qml").getroot()
    assert style.find(".//renderer-v2").get("type") == "categorizedSymbol"
    assert "vectorise" in summary["timings_s"]


def test_field_statistics_match_a_direct_count(health_run):
    out, summary = health_run
    classes = sieved_classes(out)
    by_field = {f["field_id"]: f for f in summary["fields"]}
    assert set(by_field) == {"north", "south"}
    halves = {"north": classes[:100], "south": classes[100:]}
    for field_id, pixels in halves.items():
        for class_id, name in enumerate(("soil", "crop", "weed", "diseased")):
            expected = float((pixels == class_id).sum()) * PIXEL_AREA
            got = by_field[field_id]["classes"][name]["area_m2"]
            assert got == pytest.approx(expected, abs=1e-3)
    polygons = gpd.read_file(out / "plot.health.gpkg", layer="health")
    assert set(polygons.field_id.dropna()) <= {"north", "south"}


def test_grid_cells_match_a_direct_count(health_run):
    out, _ = health_run
    classes = sieved_classes(out)
    zones = gpd.read_file(out / "plot.health.gpkg", layer="zones")
    assert len(zones) == 4 * 5  # 1 m cells over 4.0 m x 4.8 m
    # The cell at the raster's upper-left corner covers pixels [0:50, 0:50].
    x0, y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    corner = zones[zones.geometry.contains(box(x0 + 0.4, y0 - 0.6, x0 + 0.6, y0 - 0.4))]
    assert len(corner) == 1
    cell = classes[:50, :50]
    crop, weed = (cell == 1).sum(), (cell == 2).sum()
    expected = weed / (crop + weed) if crop + weed else None
    got = corner.iloc[0]["weed_pressure"]
    if expected is None:
        assert got is None or np.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_cli_polygon_options_fail_before_segmenting_and_shape_the_outputs(
    tmp_path, run_cli, capsys
):
    path = write_raster(tmp_path / "plot.tif", field_image(64, 64, seed=2))
    out = tmp_path / "bad"
    assert run_cli("run", path, "--out", out, *FAST, "--polygons", "thistle") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--polygons thistle" in err[0] and "soil, crop" in err[0]
    assert not out.exists()
    out = tmp_path / "ok"
    args = ("--polygons", "crop", "--format", "fgb", "--format", "auto", "--health-workers", "2")
    assert run_cli("run", path, "--out", out, *FAST, *args) == 0
    summary = json.loads((out / "plot.summary.json").read_text())
    assert summary["health"]["polygon_classes"] == ["crop"]
    assert summary["parameters"]["health"]["workers"] == 2
    assert {"plot.health.fgb", "plot.health.geojson", "plot.health.gpkg"} <= {
        p.name for p in out.iterdir()
    }
    assert set(pyogrio.read_dataframe(out / "plot.health.fgb")["class"]) == {"crop"}

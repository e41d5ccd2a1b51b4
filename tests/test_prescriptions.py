"""Prescriptions: rate tables, spot-spray sections, Shapefile / ISOXML / GeoPackage output."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from conftest import field_image, write_raster
from isoxml.converter.shapely_geom import ShapelyConverterV4
from isoxml.util.isoxml_io import isoxml_from_path

from agriseg.classes import ClassList
from agriseg.errors import InputError
from agriseg.field.prescriptions import (
    PrescriptionOptions,
    parse_rate_table,
    prescribe,
    read_rate_table,
    spray_sections,
)

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 5300000.0
RATES = """\
# herbicide by weed pressure: first matching line wins
product: Herbicide X
weed_pressure >= 30%: 2.0 l/ha
weed_pressure >= 0.10: 1.5 l/ha   # light infestation
otherwise: 0 l/ha
"""
#: Weed pressure of the six hand-made zones and the rate RATES gives each.
PRESSURE = [0.0, 0.05, 0.1, 0.29, 0.3, 0.8]
EXPECTED_RATE = [0.0, 0.0, 1.5, 1.5, 2.0, 2.0]


def square(x: float, y: float, size: float) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + size, Y0 + y + size)


def make_run(
    run_dir: Path, stem: str = "field", zones: bool = True, crs: str = CRS
) -> gpd.GeoDataFrame:
    """A finished run's folder by hand: summary, health polygons, a 3 x 2 zone grid of 10 m."""
    run_dir.mkdir(parents=True, exist_ok=True)
    classes = ClassList.build(["soil", "crop", "weed", "thistle"], roles={"thistle": "weed"})
    summary = {"model": {"name": "test", "classes": classes.to_json()}}
    (run_dir / f"{stem}.summary.json").write_text(json.dumps(summary), encoding="utf-8")
    health = gpd.GeoDataFrame(
        {
            "class": ["weed", "thistle", "crop", "weed", "weed"],
            "class_id": [2, 3, 1, 2, 2],
            "area_m2": [0.04, 0.09, 4.0, 0.01, 0.04],
        },
        geometry=[
            square(2, 2, 0.2),
            square(2.5, 2, 0.3),  # 0.3 m from the first: merged after buffering
            square(12, 12, 2),  # crop: never sprayed
            square(25, 5, 0.1),  # alone: a section of its own
            square(15, 25, 0.2),
        ],
        crs=CRS,
    )
    gpkg = run_dir / f"{stem}.health.gpkg"
    pyogrio.write_dataframe(health.to_crs(crs), gpkg, layer="health", driver="GPKG")
    if zones:
        cells = [square(10 * (k % 3), 10 * (k // 3), 10) for k in range(6)]
        frame = gpd.GeoDataFrame(
            {
                "zone_id": np.arange(6),
                "row": np.arange(6) // 3,
                "col": np.arange(6) % 3,
                "area_m2": np.full(6, 100.0),
                "weed_pressure": PRESSURE,
                "health_score": np.linspace(50, 100, 6),
            },
            geometry=cells,
            crs=CRS,
        )
        pyogrio.write_dataframe(frame.to_crs(crs), gpkg, layer="zones", driver="GPKG", append=True)
    return health


def write_rates(tmp_path: Path, text: str = RATES) -> Path:
    path = tmp_path / "rates.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_zone_rates_follow_the_table_in_every_format(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    options = PrescriptionOptions(rates=read_rate_table(write_rates(tmp_path)))
    [result] = prescribe(tmp_path / "run", options, tmp_path / "out")
    assert result.zone_rates == {0.0: 2, 1.5: 2, 2.0: 2}

    shp = pyogrio.read_dataframe(result.outputs["zones_shp"])
    assert shp.crs.to_epsg() == 4326
    assert list(shp.columns) == ["ZONE_ID", "RATE", "UNIT", "AREA_M2", "geometry"]
    assert shp["RATE"].dtype == np.float64
    assert shp.sort_values("ZONE_ID")["RATE"].tolist() == EXPECTED_RATE

    gpkg = pyogrio.read_dataframe(result.outputs["gpkg"], layer="prescription")
    assert gpkg["rate"].tolist() == EXPECTED_RATE
    assert gpkg["weed_pressure"].tolist() == PRESSURE


def read_taskdata(path: Path, tmp_path: Path):
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["TASKDATA/TASKDATA.XML"]
        archive.extractall(tmp_path / "usb")
    task_data, _ = isoxml_from_path(tmp_path / "usb" / "TASKDATA")
    return task_data


def test_isoxml_reads_back_with_the_same_zones_and_rates(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    options = PrescriptionOptions(spot_rate=3.0, rates=read_rate_table(write_rates(tmp_path)))
    [result] = prescribe(tmp_path / "run", options)
    task_data = read_taskdata(result.outputs["taskdata"], tmp_path)
    spot, zones = task_data.tasks
    to_shapely = ShapelyConverterV4()

    def rates_by_zone(task) -> dict[float, list[shapely.Polygon]]:
        assert task.default_treatment_zone_code == 0
        out = {}
        for tzn in task.treatment_zones:
            [pdv] = tzn.process_data_variables
            assert pdv.process_data_ddi == b"\x00\x01"  # setpoint volume per area, mm³/m²
            out[pdv.process_data_value / 100] = [
                to_shapely.to_shapely_polygon(p) for p in tzn.polygons
            ]
        return out

    zone_rates = rates_by_zone(zones)
    assert {rate: len(p) for rate, p in zone_rates.items()} == {0.0: 2, 1.5: 2, 2.0: 2}
    cells = gpd.read_file(tmp_path / "run" / "field.health.gpkg", layer="zones").to_crs(4326)
    for cell, rate in zip(cells.geometry, EXPECTED_RATE, strict=True):
        polygons = zone_rates[rate]
        assert any(p.contains(cell.representative_point()) for p in polygons)
    spot_rates = rates_by_zone(spot)
    assert set(spot_rates) == {0.0, 3.0} and len(spot_rates[3.0]) == result.spot_sections
    [product] = task_data.products
    assert product.designator == "Herbicide X"
    pdvs = [p for t in task_data.tasks for z in t.treatment_zones for p in z.process_data_variables]
    assert {p.product_id_ref for p in pdvs} == {product.id}


def test_spot_shapefile_covers_every_weed_with_the_buffer(tmp_path: Path) -> None:
    health = make_run(tmp_path / "run", zones=False)
    options = PrescriptionOptions(buffer_m=0.5, spot_rate=2.5)
    [result] = prescribe(tmp_path / "run", options)
    assert "zones_shp" not in result.outputs
    spray = pyogrio.read_dataframe(result.outputs["spot_shp"])
    assert spray.crs.to_epsg() == 4326
    assert spray["RATE"].dtype == np.float64 and set(spray["RATE"]) == {2.5}
    assert len(spray) == 3  # two weeds merged, two alone
    sprayed = shapely.union_all(spray.to_crs(CRS).geometry.to_numpy())
    weeds = health[health["class"].isin(["weed", "thistle"])]
    # buffered by a little less than --buffer: the buffer's arcs are polygons
    assert shapely.covers(sprayed, weeds.geometry.buffer(0.45)).all()
    crop = health[health["class"] == "crop"].geometry.iloc[0]
    assert not sprayed.intersects(crop.buffer(-0.6))


def test_a_geographic_run_is_buffered_in_metres(tmp_path: Path) -> None:
    health = make_run(tmp_path / "run", zones=False, crs="EPSG:4326")
    [result] = prescribe(tmp_path / "run", PrescriptionOptions(buffer_m=0.5))
    spray = pyogrio.read_dataframe(result.outputs["spot_shp"]).to_crs(CRS)
    weeds = health[health["class"] != "crop"].geometry
    assert shapely.covers(shapely.union_all(spray.geometry.to_numpy()), weeds.buffer(0.45)).all()
    assert spray.area.sum() < 10  # four patches with a 0.5 m margin, not degrees of margin
    assert spray["AREA_M2"].sum() == pytest.approx(spray.area.sum(), rel=0.01)


def test_small_holes_are_sprayed_over_and_small_sections_grown() -> None:
    ring = shapely.Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)],
        [[(2, 2), (2.5, 2), (2.5, 2.5), (2, 2.5)], [(5, 5), (8, 5), (8, 8), (5, 8)]],
    )
    speck = shapely.box(20, 20, 20.1, 20.1)
    sections = spray_sections(np.array([ring, speck], dtype=object), 0.0, 0.5)
    assert len(sections) == 2
    big = max(sections, key=lambda p: p.area)
    assert len(big.interiors) == 1  # the 0.25 m² hole is filled, the 9 m² one kept
    small = min(sections, key=lambda p: p.area)
    assert small.area >= 0.5 and small.covers(speck)


def test_prescription_layers_are_styled_by_rate(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    options = PrescriptionOptions(rates=read_rate_table(write_rates(tmp_path)))
    [result] = prescribe(tmp_path / "run", options)
    with sqlite3.connect(result.outputs["gpkg"]) as db:
        styles = dict(db.execute("SELECT f_table_name, styleQML FROM layer_styles"))
    assert set(styles) == {"prescription", "spot"}
    assert 'type="graduatedSymbol"' in styles["prescription"]
    assert 'attr="rate"' in styles["prescription"]
    assert 'label="1.5 l/ha"' in styles["prescription"]
    red, green = "215,25,28,255", "26,150,65,255"  # the most, none
    assert f'"color" type="QString" value="{green}"' in styles["prescription"]
    assert f'"color" type="QString" value="{red}"' in styles["spot"]  # spot: the only rate


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("weed_pressure => 0.1: 1 l/ha\notherwise: 0 l/ha\n", ":1:", "cannot read"),
        ("weed_pressure >= 0.1: 1 gal/ac\notherwise: 0 l/ha\n", ":1:", "unknown unit 'gal/ac'"),
        ("\nweed_pressure >= 0.1: 1 l/ha\notherwise: 0 kg/ha\n", ":3:", "differs from l/ha"),
        ("weed_pressure >= 0.1: -1 l/ha\notherwise: 0 l/ha\n", ":1:", "negative rate"),
        ("otherwise: 0 l/ha\nweed_pressure >= 0.1: 1 l/ha\n", ":2:", "after the 'otherwise'"),
        ("# only\nweed_pressure >= 0.1: 1 l/ha\n", ":2:", "no 'otherwise' line"),
        ("product: A\nproduct: B\notherwise: 0 l/ha\n", ":2:", "a second product line"),
        ("weed_presure >= 0.1: 1 l/ha\notherwise: 0 l/ha\n", ":1:", "unknown zone statistic"),
    ],
)
def test_bad_rate_tables_get_one_line_naming_file_line_and_fix(
    tmp_path: Path, run_cli, capsys, text: str, where: str, says: str
) -> None:
    make_run(tmp_path / "run")
    rates = write_rates(tmp_path, text)
    assert run_cli("prescribe", tmp_path / "run", "--rates", rates, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{rates}{where}" in err and says in err and ";" in err
    assert not (tmp_path / "o").exists()


def test_rate_options_on_the_command_line(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run")
    rules = ["health_score < 75: 1.25 kg/ha", "otherwise: 0.5 kg/ha"]
    args = [a for rule in rules for a in ("--rate", rule)]
    assert run_cli("prescribe", tmp_path / "run", *args, "--spot-rate", "4", "--quiet") == 0
    zones = pyogrio.read_dataframe(tmp_path / "run" / "field.zones.shp.zip")
    assert zones["RATE"].tolist() == [1.25, 1.25, 1.25, 0.5, 0.5, 0.5]
    assert set(zones["UNIT"]) == {"kg/ha"}
    task_data = read_taskdata(tmp_path / "run" / "field.taskdata.zip", tmp_path)
    ddis = {
        p.process_data_ddi
        for t in task_data.tasks
        for z in t.treatment_zones
        for p in z.process_data_variables
    }
    assert ddis == {b"\x00\x06"}  # setpoint mass per area
    with pytest.raises(InputError, match=r"^--rate #2: cannot read"):
        parse_rate_table(["health_score < 75: 1 kg/ha", "else 0"], "--rate", line_numbers=False)


def test_rates_without_a_zone_layer_say_to_rerun_with_grid(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run", zones=False)
    rates = write_rates(tmp_path)
    assert run_cli("prescribe", tmp_path / "run", "--rates", rates) == 2
    err = capsys.readouterr().err
    assert "no 'zones' layer" in err and "--grid" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "field.health.gpkg",
        "field.summary.json",
    ]


def test_prescribe_needs_a_run_folder(tmp_path: Path, run_cli, capsys) -> None:
    assert run_cli("prescribe", tmp_path) == 2
    assert "no <stem>.summary.json here" in capsys.readouterr().err


def test_run_writes_prescriptions_with_the_rates_option(tmp_path: Path, run_cli) -> None:
    image = write_raster(tmp_path / "survey.tif", field_image(128, 128))
    rates = write_rates(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", image, "--out", out, "--grid", "1", "--rates", rates, "--quiet") == 0
    zones = pyogrio.read_dataframe(out / "survey.health.gpkg", layer="zones")
    shp = pyogrio.read_dataframe(out / "survey.zones.shp.zip")
    assert len(shp) == len(zones)
    expected = parse_rate_table(RATES.splitlines(), "rates").rates(zones)
    assert shp.sort_values("ZONE_ID")["RATE"].tolist() == expected.tolist()
    assert (out / "survey.spot.shp.zip").is_file() and (out / "survey.taskdata.zip").is_file()


def test_run_checks_the_rate_table_before_segmenting(tmp_path: Path, run_cli, capsys) -> None:
    image = write_raster(tmp_path / "survey.tif", field_image(64, 64))
    rates = write_rates(tmp_path, "weed_pressure >= 0.1: 1 l/ha\n")
    assert run_cli("run", image, "--out", tmp_path / "out", "--grid", "1", "--rates", rates) == 2
    assert "rates.txt:1: the table has no 'otherwise' line" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fields_get_rates_from_the_runs_per_field_statistics(tmp_path: Path, run_cli) -> None:
    make_run(tmp_path / "run", zones=False)
    fields = gpd.GeoDataFrame(
        {"name": ["north", "south"]},
        geometry=[
            square(0, 10, 20),
            shapely.MultiPolygon([square(0, 0, 5), square(10, 0, 5)]),  # two parts
        ],
        crs=CRS,
    )
    fields.to_file(tmp_path / "fields.gpkg")
    summary_path = tmp_path / "run" / "field.summary.json"
    summary = json.loads(summary_path.read_text())
    summary["input"] = {"crs": CRS}
    summary["fields"] = [
        {"field_id": fid, "valid_area_m2": area, "classes": {}, "weed_pressure": wp}
        for fid, area, wp in (("north", 400.0, 0.35), ("south", 50.0, None))
    ]
    summary_path.write_text(json.dumps(summary))
    rates = write_rates(tmp_path)
    args = ("prescribe", tmp_path / "run", "--rates", rates, "--fields", tmp_path / "fields.gpkg")
    assert run_cli(*args, "--quiet") == 0
    shp = pyogrio.read_dataframe(tmp_path / "run" / "field.zones.shp.zip")
    assert shp["ZONE_ID"].tolist() == ["north", "south"]
    assert shp["RATE"].tolist() == [2.0, 0.0]  # no weed pressure known: 'otherwise'
    assert shp.geometry.iloc[1].geom_type == "MultiPolygon"
    task_data = read_taskdata(tmp_path / "run" / "field.taskdata.zip", tmp_path)
    zones = {
        z.process_data_variables[0].process_data_value: z
        for z in task_data.tasks[1].treatment_zones
    }
    assert len(zones[200].polygons) == 1 and len(zones[0].polygons) == 2
    assert zones[0].code == 0 == task_data.tasks[1].default_treatment_zone_code


def test_fields_need_the_runs_field_statistics(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run")
    square_field = gpd.GeoDataFrame({"name": ["a"]}, geometry=[square(0, 0, 5)], crs=CRS)
    square_field.to_file(tmp_path / "fields.gpkg")
    args = ("--rates", write_rates(tmp_path), "--fields", tmp_path / "fields.gpkg")
    assert run_cli("prescribe", tmp_path / "run", *args) == 2
    assert "no per-field statistics; rerun agriseg run with --fields" in capsys.readouterr().err


def test_a_batch_folder_gets_prescriptions_beside_each_survey(tmp_path: Path, run_cli) -> None:
    for name in ("north", "south"):
        make_run(tmp_path / "batch" / name, stem=name)
    rates = write_rates(tmp_path)
    assert run_cli("prescribe", tmp_path / "batch", "--rates", rates, "--quiet") == 0
    for name in ("north", "south"):
        zones = pyogrio.read_dataframe(tmp_path / "batch" / name / f"{name}.zones.shp.zip")
        assert zones.sort_values("ZONE_ID")["RATE"].tolist() == EXPECTED_RATE


def test_batch_writes_prescriptions_for_each_survey(tmp_path: Path, run_cli) -> None:
    surveys = tmp_path / "surveys"
    surveys.mkdir()
    write_raster(surveys / "a.tif", field_image(64, 64))
    args = ("--out", tmp_path / "out", "--grid", "1", "--rates", write_rates(tmp_path))
    assert run_cli("batch", surveys, *args, "--quiet", "--device", "cpu") == 0
    assert pyogrio.read_dataframe(tmp_path / "out" / "a" / "a.zones.shp.zip")["RATE"].notna().all()
    assert (tmp_path / "out" / "a" / "a.spot.shp.zip").is_file()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--format", "geojson", "--prescribe"), "add --format gpkg"),
        (("--rate", "otherwise: 1 l/ha"), "add --grid SIZE_M"),
        (("--polygons", "none", "--prescribe"), "drop --polygons none"),
    ],
)
def test_run_refuses_prescriptions_it_cannot_make_before_segmenting(
    tmp_path: Path, run_cli, capsys, extra: tuple[str, ...], says: str
) -> None:
    image = write_raster(tmp_path / "survey.tif", field_image(64, 64))
    assert run_cli("run", image, "--out", tmp_path / "out", *extra) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_pixel_mode_run_cannot_be_prescribed(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run")
    summary_path = tmp_path / "run" / "field.summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "input": {"crs": None}}))
    assert run_cli("prescribe", tmp_path / "run") == 2
    assert "pixel mode" in capsys.readouterr().err


def test_a_run_without_polygons_of_every_weed_class_cannot_be_prescribed(
    tmp_path: Path, run_cli, capsys
) -> None:
    # A run with --polygons crop,weed made no thistle polygons: a spray map would miss
    # every thistle, so prescribe refuses instead of writing it.
    make_run(tmp_path / "run")
    summary_path = tmp_path / "run" / "field.summary.json"
    summary = json.loads(summary_path.read_text())
    summary["health"] = {"polygon_classes": ["crop", "weed"]}
    summary_path.write_text(json.dumps(summary))
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert run_cli("prescribe", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "no polygons of thistle" in err and "--polygons roles" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    summary["health"] = {"polygon_classes": ["weed", "thistle"]}
    summary_path.write_text(json.dumps(summary))
    assert run_cli("prescribe", tmp_path / "run") == 0

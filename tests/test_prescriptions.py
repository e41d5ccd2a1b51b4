"""Prescriptions: rate tables, spot-spray sections, Shapefile / ISOXML / GeoPackage output."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from conftest import GEOPACKAGE_1_2, field_image, geopackage_version, write_raster
from isoxml.converter.shapely_geom import ShapelyConverterV4
from isoxml.models.ddi_entities import DDEntity
from isoxml.util.isoxml_io import isoxml_from_path
from rasterio.features import shapes

from agriseg.classes import ClassList
from agriseg.errors import InputError
from agriseg.field.prescriptions import (
    SPOT_WARN_SHARE,
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


#: Pixel size of the hand-made class rasters, metres.
PIXEL = 0.1


def write_classes(
    run_dir: Path, stem: str, size_m: float = 30.0, valid: np.ndarray | None = None
) -> Path:
    """The run's class raster: ``size_m`` square from (X0, Y0) upwards, class 0, nodata
    (255) where ``valid`` is False."""
    n = round(size_m / PIXEL)
    data = np.zeros((1, n, n), dtype="uint8")
    if valid is not None:
        data[0][~valid] = 255
    transform = Affine(PIXEL, 0, X0, 0, -PIXEL, Y0 + size_m)
    return write_raster(
        run_dir / f"{stem}.classes.tif", data, crs=CRS, transform=transform, nodata=255
    )


def make_run(
    run_dir: Path, stem: str = "field", zones: bool = True, crs: str = CRS
) -> gpd.GeoDataFrame:
    """A finished run's folder by hand: summary, class raster (30 m square), health
    polygons, a 3 x 2 zone grid of 10 m."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_classes(run_dir, stem)
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
    assert list(shp.columns) == ["ZONE_ID", "RATE", "UNIT", "ZONE_M2", "IMAGED_M2", "geometry"]
    assert shp["RATE"].dtype == np.float64
    assert shp.sort_values("ZONE_ID")["RATE"].tolist() == EXPECTED_RATE

    gpkg = pyogrio.read_dataframe(result.outputs["gpkg"], layer="prescription")
    assert gpkg["rate"].tolist() == EXPECTED_RATE
    assert gpkg["weed_pressure"].tolist() == PRESSURE


#: ISO 11783-10 v4.3 schema of TASKDATA.XML (as published by the AEF).
TASK_XSD = Path(__file__).parent / "data" / "isoxml-xsd" / "ISO11783_TaskFile_V4-3.xsd"


def schema_errors(xml: Path) -> str | None:
    """What the ISO schema finds wrong with ``xml`` ("" if nothing), read by lxml or
    xmllint; None when neither is installed."""
    try:
        from lxml import etree
    except ImportError:
        if shutil.which("xmllint") is None:
            return None
        args = ["xmllint", "--noout", "--schema", str(TASK_XSD), str(xml)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        return "" if done.returncode == 0 else done.stderr
    schema = etree.XMLSchema(etree.parse(str(TASK_XSD)))
    return "" if schema.validate(etree.parse(str(xml))) else str(schema.error_log)


def read_taskdata(path: Path, tmp_path: Path, files: tuple[str, ...] = ()):
    """The task data of a prescription's zip (its grid files by name if ``files``),
    checked against the ISO schema where a validator is installed."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names[0] == "TASKDATA/TASKDATA.XML"
        assert all(re.fullmatch(r"TASKDATA/GRD\d{5}\.bin", n) for n in names[1:])
        archive.extractall(tmp_path / "usb")
    assert schema_errors(tmp_path / "usb" / "TASKDATA" / "TASKDATA.XML") in ("", None)
    task_data, binaries = isoxml_from_path(tmp_path / "usb" / "TASKDATA")
    return (task_data, binaries) if files else task_data


def litres_per_ha(pdv) -> float:
    """A process data value in l/ha, through its data-dictionary entry (1 l/ha is
    10^6 mm³ on 10^4 m², 100 mm³/m²)."""
    entry = DDEntity.from_bytes(pdv.process_data_ddi)
    assert entry.unit == "mm³/m²"
    return round(pdv.process_data_value * entry.bit_resolution / 100, 9)


def test_isoxml_reads_back_with_the_same_zones_and_rates(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    rates = read_rate_table(write_rates(tmp_path))
    options = PrescriptionOptions(spot_rate=3.0, rates=rates, isoxml="zones")
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
            out[litres_per_ha(pdv)] = [to_shapely.to_shapely_polygon(p) for p in tzn.polygons]
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
    assert spray["ZONE_M2"].sum() == pytest.approx(spray.area.sum(), rel=0.01)


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
    assert geopackage_version(result.outputs["gpkg"]) == GEOPACKAGE_1_2
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
        "field.classes.tif",
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
    args = (*args, "--isoxml", "zones")
    assert run_cli(*args, "--quiet") == 0
    shp = pyogrio.read_dataframe(tmp_path / "run" / "field.zones.shp.zip")
    assert shp["ZONE_ID"].tolist() == ["north", "south"]
    assert shp["RATE"].tolist() == [2.0, 0.0]  # no weed pressure known: 'otherwise'
    assert shp.geometry.iloc[1].geom_type == "MultiPolygon"
    task_data = read_taskdata(tmp_path / "run" / "field.taskdata.zip", tmp_path)
    zones = {
        litres_per_ha(z.process_data_variables[0]): z for z in task_data.tasks[1].treatment_zones
    }
    assert len(zones[2.0].polygons) == 1 and len(zones[0].polygons) == 2
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


#: Units of the rate tables: the data-dictionary unit each is sent in, and how many of
#: those one of it is (1 l/ha = 10^6 mm³ / 10^4 m²; 1 kg/ha = 10^6 mg / 10^4 m²).
SI_RATES = {"l/ha": ("mm³/m²", 100), "kg/ha": ("mg/m²", 100)}


@pytest.mark.parametrize("layout", ["zones", "grid"])
@pytest.mark.parametrize(
    ("rule", "value", "ddi"),
    [("1.5 l/ha", 15000, 1), ("0.5 l/ha", 5000, 1), ("80 kg/ha", 8000, 6)],
)
def test_rates_are_process_data_values_of_their_dictionary_entry(
    tmp_path: Path, layout: str, rule: str, value: int, ddi: int
) -> None:
    make_run(tmp_path / "run")
    rates = parse_rate_table([f"otherwise: {rule}"], "--rate", line_numbers=False)
    options = PrescriptionOptions(rates=rates, isoxml=layout)
    [result] = prescribe(tmp_path / "run", options)
    task_data, files = read_taskdata(result.outputs["taskdata"], tmp_path, files=("GRD",))
    zone_task = task_data.tasks[1]
    pdvs = [p for z in zone_task.treatment_zones if z.code != 0 for p in z.process_data_variables]
    if layout == "grid":
        [grid] = zone_task.grids
        values = set(np.frombuffer(files[grid.filename], dtype="<i4").tolist()) - {0}
        assert {p.process_data_value for p in pdvs} == {0}  # the grid's cells replace it
    else:
        values = {p.process_data_value for p in pdvs}
    assert values == {value}
    [pdv_ddi] = {p.process_data_ddi for p in pdvs}
    entry = DDEntity.from_bytes(pdv_ddi)
    amount, unit = rule.split()
    si_unit, per_unit = SI_RATES[unit]
    assert entry.ddi == ddi and entry.unit == si_unit
    assert value * entry.bit_resolution / per_unit == pytest.approx(float(amount))


@pytest.mark.parametrize("layout", ["zones", "grid"])
def test_every_task_names_a_customer_farm_partfield_and_product(
    tmp_path: Path, run_cli, layout: str
) -> None:
    make_run(tmp_path / "run")
    rates = write_rates(tmp_path, "customer: Table Customer\nfarm: Table Farm\n" + RATES)
    names = ("--customer", "Jane Smith", "--field", "North 12")
    args = ("prescribe", tmp_path / "run", "--rates", rates, "--isoxml", layout, *names)
    assert run_cli(*args, "--quiet") == 0
    taskdata = tmp_path / "run" / "field.taskdata.zip"
    task_data = read_taskdata(taskdata, tmp_path)
    errors = schema_errors(tmp_path / "usb" / "TASKDATA" / "TASKDATA.XML")
    if errors is None:
        pytest.skip("neither lxml nor xmllint is installed to check the ISO schema")
    assert errors == ""
    [customer], [farm], [partfield] = task_data.customers, task_data.farms, task_data.partfields
    [product] = task_data.products
    # the command line wins over the table, the table over the defaults
    assert (customer.last_name, farm.designator, partfield.designator, product.designator) == (
        "Jane Smith",
        "Table Farm",
        "North 12",
        "Herbicide X",
    )
    assert len(task_data.tasks) == 2
    for task in task_data.tasks:
        assert (task.customer_id_ref, task.farm_id_ref, task.partfield_id_ref) == (
            customer.id,
            farm.id,
            partfield.id,
        )
        refs = {p.product_id_ref for z in task.treatment_zones for p in z.process_data_variables}
        assert refs == {product.id}
    # the partfield is bounded by the surveyed area: the 30 m square of the class raster
    [boundary] = partfield.polygons
    assert boundary.type.value == "1"
    surveyed = ShapelyConverterV4().to_shapely_polygon(boundary)
    utm = gpd.GeoSeries([surveyed], crs=4326).to_crs(CRS).iloc[0]
    assert utm.area == pytest.approx(900, rel=0.01) and partfield.area == round(utm.area)
    assert square(0, 0, 30).buffer(1e-3).covers(utm)


def test_default_names_when_none_are_given(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    [result] = prescribe(tmp_path / "run", PrescriptionOptions())
    task_data = read_taskdata(result.outputs["taskdata"], tmp_path)
    assert [p.designator for p in task_data.products] == ["Product"]
    assert task_data.partfields[0].designator == "field"  # the survey's name
    assert task_data.customers[0].last_name and task_data.farms[0].designator


@pytest.mark.parametrize("cell_m", [2.0, 7.0])
def test_grid_file_holds_one_value_per_cell_and_reads_back_to_the_rates(
    tmp_path: Path, cell_m: float
) -> None:
    from isoxml.converter.np_grid import to_numpy_array

    make_run(tmp_path / "run")
    options = PrescriptionOptions(rates=read_rate_table(write_rates(tmp_path)), cell_m=cell_m)
    [result] = prescribe(tmp_path / "run", options)
    task_data, files = read_taskdata(result.outputs["taskdata"], tmp_path, files=("GRD",))
    [grid] = task_data.tasks[1].grids
    assert grid.type.value == "2" and grid.treatment_zone_code == 1
    data = files[grid.filename]
    assert len(data) == grid.maximum_row * grid.maximum_column * 4 == grid.filelength
    entry = DDEntity.from_id(1)
    rates = to_numpy_array(data, grid, [entry])[..., 0] / SI_RATES["l/ha"][1]  # l/ha
    # cell centres, rows from the south-west corner
    rows, cols = np.mgrid[0 : grid.maximum_row, 0 : grid.maximum_column]
    lat = float(grid.minimum_north_position) + (rows + 0.5) * grid.cell_north_size
    lon = float(grid.minimum_east_position) + (cols + 0.5) * grid.cell_east_size
    centres = gpd.GeoSeries(gpd.points_from_xy(lon.ravel(), lat.ravel()), crs=4326).to_crs(CRS)
    cells = gpd.read_file(tmp_path / "run" / "field.health.gpkg", layer="zones")
    checked = 0
    for cell, rate in zip(cells.geometry, EXPECTED_RATE, strict=True):
        inside = centres.within(cell.buffer(-0.75 * cell_m)).to_numpy()  # wholly in a zone
        assert np.allclose(rates.ravel()[inside], rate)
        checked += inside.sum()
    assert checked > 6 * 6 or cell_m > 5  # every zone has whole cells of 2 m
    # a cell mostly outside the surveyed 30 m square carries no rate
    x0, y0 = lon - grid.cell_east_size / 2, lat - grid.cell_north_size / 2
    boxes = shapely.box(x0, y0, x0 + grid.cell_east_size, y0 + grid.cell_north_size).ravel()
    boxes = gpd.GeoSeries(boxes, crs=4326).to_crs(CRS)
    inside = boxes.intersection(square(0, 0, 30)).area / boxes.area
    assert (inside < 0.49).any() or cell_m < 5  # 30 m in 7 m cells: 4.3 cells
    assert (rates.ravel()[(inside < 0.49).to_numpy()] == 0).all()
    assert (rates.ravel()[(inside > 0.51).to_numpy()] > 0).any()


def footprint(classes: Path) -> shapely.Geometry:
    """The valid pixels of a class raster, by rasterio."""
    with rasterio.open(classes) as src:
        mask = src.dataset_mask()
        polygons = [
            shapely.geometry.shape(g)
            for g, _ in shapes(mask, mask=mask > 0, transform=src.transform)
        ]
    return shapely.union_all(polygons)


def test_no_section_or_zone_reaches_past_the_surveyed_area(tmp_path: Path, run_cli) -> None:
    make_run(tmp_path / "run")
    # nodata beyond a diagonal edge through the zones and next to two weed patches
    rows, cols = np.mgrid[0:300, 0:300]
    classes = write_classes(tmp_path / "run", "field", valid=cols + rows * 0.5 < 260)
    surveyed = footprint(classes)
    args = ("prescribe", tmp_path / "run", "--rates", write_rates(tmp_path), "--buffer", "1.5")
    assert run_cli(*args, "--isoxml", "zones", "--quiet") == 0
    for kind in ("spot", "zones"):
        shp = pyogrio.read_dataframe(tmp_path / "run" / f"field.{kind}.shp.zip").to_crs(CRS)
        points = shapely.points(shapely.get_coordinates(shp.geometry.to_numpy()))
        assert len(points) and surveyed.buffer(1e-6).covers(points).all(), kind
        assert (shp["ZONE_M2"] <= shp["IMAGED_M2"] + 0.01 * shp["ZONE_M2"] + 0.05).all()
    spot = pyogrio.read_dataframe(tmp_path / "run" / "field.spot.shp.zip").to_crs(CRS)
    assert spot.area.sum() > 0
    task_data = read_taskdata(tmp_path / "run" / "field.taskdata.zip", tmp_path)
    to_shapely = ShapelyConverterV4()
    polygons = [
        to_shapely.to_shapely_polygon(p)
        for t in task_data.tasks
        for z in t.treatment_zones
        for p in z.polygons
    ]
    utm = gpd.GeoSeries(polygons, crs=4326).to_crs(CRS).to_numpy()
    points = shapely.points(shapely.get_coordinates(utm))
    assert surveyed.buffer(1e-3).covers(points).all()  # 9 decimals of a degree: < 1 mm


def test_spot_sections_covering_most_of_the_field_warn(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run")
    [narrow] = prescribe(tmp_path / "run", PrescriptionOptions(buffer_m=0.5))
    assert narrow.warnings == [] and 0 < narrow.spot_share < 0.05
    assert run_cli("prescribe", tmp_path / "run", "--buffer", "9", "--quiet") == 0
    out = capsys.readouterr()
    [line] = out.err.strip().splitlines()
    assert line.startswith("warning: field: the spot sections cover") and "blanket" in line
    [wide] = prescribe(tmp_path / "run", PrescriptionOptions(buffer_m=9))
    assert wide.spot_share > SPOT_WARN_SHARE and wide.warnings
    assert f"{wide.spot_share:.0%}" in line
    summary = json.loads(wide.outputs["summary"].read_text())
    assert summary["warnings"] == wide.warnings
    assert summary["spot"]["share_of_surveyed"] == wide.spot_share
    sprayed = pyogrio.read_dataframe(wide.outputs["spot_shp"]).to_crs(CRS).area.sum()
    assert wide.spot_share == pytest.approx(sprayed / 900, rel=0.01)  # the 30 m square


def test_a_share_compared_with_a_number_above_one_is_refused(
    tmp_path: Path, run_cli, capsys
) -> None:
    make_run(tmp_path / "run")
    rates = write_rates(tmp_path, "weed_pressure >= 10: 1.5 l/ha\notherwise: 0 l/ha\n")
    assert run_cli("prescribe", tmp_path / "run", "--rates", rates, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert f"{rates}:1: weed_pressure is a share from 0 to 1" in err
    assert "'>= 10%'" in err and "'>= 0.1'" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="crop_share is a share"):
        parse_rate_table(["crop_share < 50: 1 kg/ha", "otherwise: 0 kg/ha"], "t")
    # health_score runs 0-100: a threshold above 1 is meant
    parse_rate_table(["health_score < 50: 1 kg/ha", "otherwise: 0 kg/ha"], "t")
    made = []
    for spelling in ("10%", "0.10"):
        table = parse_rate_table(
            [f"weed_pressure >= {spelling}: 1.5 l/ha", "otherwise: 0 l/ha"], "t"
        )
        [result] = prescribe(tmp_path / "run", PrescriptionOptions(rates=table))
        made.append(pyogrio.read_dataframe(result.outputs["zones_shp"])["RATE"].tolist())
    assert made[0] == made[1] == [0.0, 0.0, 1.5, 1.5, 1.5, 1.5]


def test_edge_slivers_join_a_neighbouring_zone(tmp_path: Path) -> None:
    from agriseg.health.zones import MIN_ZONE_SHARE, grid_zones

    run_dir = tmp_path / "run"
    make_run(run_dir, zones=False)
    # a 10.4 m survey across the corner of four 10 m cells: 94.09, 6.79, 6.79 and 0.49 m²
    n = 104
    data = np.ones((1, n, n), dtype="uint8")  # crop
    data[0, :, 97:] = 2  # weeds in the eastern strip (the slivers)
    transform = Affine(PIXEL, 0, X0 + 0.3, 0, -PIXEL, Y0 + 10.7)
    classes_path = write_raster(
        run_dir / "field.classes.tif", data, crs=CRS, transform=transform, nodata=255
    )
    summary = json.loads((run_dir / "field.summary.json").read_text())
    classes = ClassList.from_json(summary["model"]["classes"])
    zones = grid_zones(classes_path, classes, 10.0)
    assert sorted(zones["area_m2"].round(2)) == [0.49, 6.79, 6.79, 94.09]
    assert (zones["area_m2"] < MIN_ZONE_SHARE * 100).sum() == 3
    pyogrio.write_dataframe(zones, run_dir / "field.health.gpkg", layer="zones", append=True)
    table = parse_rate_table(["weed_pressure >= 5%: 1.5 l/ha", "otherwise: 0 l/ha"], "t")
    [result] = prescribe(run_dir, PrescriptionOptions(rates=table))
    [zone] = pyogrio.read_dataframe(result.outputs["gpkg"], layer="prescription").itertuples()
    assert zone.cells == 4
    assert zone.imaged_m2 == pytest.approx(10.4 * 10.4, abs=0.01)
    assert zone.zone_m2 == pytest.approx(10.4 * 10.4, rel=0.03)  # inside the pixels
    weeds = (data == 2).sum() / data.size  # every pixel is crop or weed
    assert zone.weed_pressure == pytest.approx(weeds)
    assert zone.rate == 1.5  # the pooled pressure (6.7 %), not the big cell's alone (3.8 %)


CHECK_TASKDATA = Path(__file__).parents[1] / "scripts" / "check_taskdata.js"


def isoxml_js(taskdata: Path) -> tuple[int, dict]:
    """What isoxml-js (npm ``isoxml``, found through NODE_PATH) reads in ``taskdata``."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    probe = subprocess.run([node, "-e", "require.resolve('isoxml')"], capture_output=True)
    if probe.returncode:
        pytest.skip("isoxml-js is not installed (npm install isoxml; NODE_PATH=.../node_modules)")
    done = subprocess.run(
        [node, str(CHECK_TASKDATA), str(taskdata)], capture_output=True, text=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("layout", ["zones", "grid"])
def test_isoxml_js_reads_the_task_data_without_warnings(tmp_path: Path, layout: str) -> None:
    make_run(tmp_path / "run")
    rates = read_rate_table(write_rates(tmp_path))
    [result] = prescribe(tmp_path / "run", PrescriptionOptions(rates=rates, isoxml=layout))
    status, read = isoxml_js(result.outputs["taskdata"])
    assert (status, read["warnings"], read["version"]) == (0, [], 4)
    assert [t["designator"] for t in read["tasks"]] == ["field spot spray", "field zone rates"]
    for task in read["tasks"]:
        assert (task["customer"], task["farm"], task["partfield"]) == ("Customer", "Farm", "field")
        if layout == "grid":
            grid = task["grid"]
            assert grid["type"] == "2" and grid["bytes"] == grid["rows"] * grid["columns"] * 4
    if layout == "grid":
        # the same reader warns about a grid file of the wrong size
        broken = tmp_path / "broken.zip"
        with (
            zipfile.ZipFile(result.outputs["taskdata"]) as src,
            zipfile.ZipFile(broken, "w") as dst,
        ):
            for name in src.namelist():
                data = src.read(name)
                dst.writestr(name, data[:-4] if name.endswith("GRD00002.bin") else data)
        status, read = isoxml_js(broken)
        assert status == 1 and "Invalid size of grid file GRD00002.bin" in read["warnings"][0]


def test_the_surveyed_area_is_the_same_read_in_strips(tmp_path: Path) -> None:
    from agriseg.field.footprint import surveyed_area

    rows, cols = np.mgrid[0:300, 0:300]
    valid = ((cols - 150) ** 2 + (rows - 150) ** 2 < 140**2) & ~((rows > 100) & (rows < 110))
    classes = write_classes(tmp_path, "f", valid=valid)
    whole, strips = surveyed_area(classes), surveyed_area(classes, strip_rows=7)
    assert whole.exact.area == pytest.approx(valid.sum() * PIXEL**2)
    assert strips.exact.equals(whole.exact)  # strips joined without seams
    assert len(shapely.get_parts(whole.exact)) == 2  # the nodata stripe splits the disc
    assert whole.tolerance == pytest.approx(0.75 * PIXEL)  # 10 cm pixels: 0.75 pixel
    assert whole.exact.covers(whole.outline)
    edge = shapely.hausdorff_distance(whole.exact.boundary, whole.outline.boundary)
    # shrunk by the tolerance (a pixel corner √2 times as far), simplified by as much
    assert edge <= (1 + 2**0.5) * whole.tolerance + 1e-9
    vertices = len(shapely.get_coordinates(whole.outline))
    assert vertices < len(shapely.get_coordinates(whole.exact)) / 3  # the steps are gone


def test_prescribe_needs_the_class_raster(tmp_path: Path, run_cli, capsys) -> None:
    make_run(tmp_path / "run")
    (tmp_path / "run" / "field.classes.tif").unlink()
    assert run_cli("prescribe", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "field.classes.tif: missing, so the surveyed area is unknown" in err


def test_a_survey_edge_of_slivers_joins_the_cells_beside_it() -> None:
    from agriseg.health.zones import join_slivers

    # 4 x 4 cells of 10 m whose last row and column the survey barely enters
    n = 4
    rows, cols = np.divmod(np.arange(n * n), n)
    area = np.where((rows == n - 1) | (cols == n - 1), 4.0, 100.0)
    area[-1] = 0.16
    weed = np.where(area < 50, 0.5, 0.1)
    zones = gpd.GeoDataFrame(
        {
            "zone_id": np.arange(n * n),
            "row": rows,
            "col": cols,
            "area_m2": area,
            "soil_share": 0.5,
            "crop_share": 0.5 - weed,
            "weed_share": weed,
            "thistle_share": 0.0,
            "weed_pressure": weed / 0.5,
        },
        geometry=[square(10 * c, -10 * r, 10) for r, c in zip(rows, cols, strict=True)],
        crs=CRS,
    )
    classes = ClassList.build(["soil", "crop", "weed", "thistle"], roles={"thistle": "weed"})
    joined = join_slivers(zones, classes)
    # each sliver joins the whole cell beside it (not one zone growing along the edge)
    assert len(joined) == 9 and sorted(joined["cells"]) == [1, 1, 1, 1, 2, 2, 2, 2, 4]
    assert joined["area_m2"].sum() == pytest.approx(area.sum())
    corner = joined[joined["cells"] == 4].iloc[0]
    pooled_weed = (100 * 0.1 + 2 * 4 * 0.5 + 0.16 * 0.5) / corner["area_m2"]
    assert corner["weed_share"] == pytest.approx(pooled_weed)
    assert corner["weed_pressure"] == pytest.approx(pooled_weed / 0.5)
    assert corner.geometry.area == pytest.approx(400)

"""Plant counts: the generator's plant truth, counting on the row lattice, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from conftest import GEOPACKAGE_1_2, geopackage_version, write_raster
from scipy.spatial import cKDTree

from agriseg.classes import DEFAULT_CLASSES
from agriseg.errors import InputError
from agriseg.field.plants import PlantOptions, count_plants
from agriseg.learning.synthetic import SurveyPaths, draw_params, generate_survey, write_survey

#: Held-out draws (seed, GSD, row angle): different scales and row directions.
SURVEYS = [(9101, 0.012, 20.0), (9102, 0.025, 75.0), (9103, 0.038, 140.0)]


def make_survey(tmp_path: Path, seed: int, gsd: float, angle: float, size: int) -> SurveyPaths:
    params = draw_params(seed, size, size, gsd_m=gsd, row_angle_deg=angle)
    return write_survey(generate_survey(params, seed), tmp_path, f"s{seed}")


def truth(paths: SurveyPaths) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(paths.plants, layer="plants")


def test_truth_centres_lie_on_their_plants(tmp_path: Path) -> None:
    survey = generate_survey(draw_params(4, 300, 300), 4)
    points = survey.plants.points(survey.crs)
    assert len(points) > 100
    cols, rows = ~survey.transform * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    labels = survey.labels[rows.astype(int), cols.astype(int)]
    crop, diseased = DEFAULT_CLASSES.by_name("crop").id, DEFAULT_CLASSES.by_name("diseased").id
    assert np.array_equal(labels == diseased, points["diseased"].to_numpy())
    assert np.isin(labels, [crop, diseased]).all()
    assert (points["area_m2"] > 0).all()
    # Written beside the survey in its CRS, the same points.
    paths = write_survey(survey, tmp_path, "s")
    back = truth(paths)
    assert back.crs == points.crs and len(back) == len(points)
    assert np.allclose(back.geometry.x, points.geometry.x)


@pytest.mark.parametrize(("seed", "gsd", "angle"), SURVEYS)
def test_counts_the_generators_plants_within_5_percent(
    tmp_path: Path, seed: int, gsd: float, angle: float
) -> None:
    paths = make_survey(tmp_path, seed, gsd, angle, 640)
    expected = truth(paths)
    count = count_plants(paths.labels, PlantOptions(window_px=512))
    assert len(count.plants) == pytest.approx(len(expected), rel=0.05)
    summary = count.summary(rasterio.open(paths.labels).transform)
    area = (640 * gsd) ** 2
    assert summary["plants_per_m2"] == pytest.approx(len(expected) / area, rel=0.05)
    assert summary["rows"]["direction_deg"] == pytest.approx(angle, abs=1.0)
    # Each plant found lies on a true plant: within a third of the plant spacing of one.
    spacing = summary["rows"]["plant_spacing_m"]
    xy = np.column_stack([count.plants.geometry.x, count.plants.geometry.y])
    distance, _ = cKDTree(np.column_stack([expected.geometry.x, expected.geometry.y])).query(xy)
    assert np.mean(distance < spacing / 3) > 0.95


def test_window_size_does_not_change_the_plants(tmp_path: Path) -> None:
    paths = make_survey(tmp_path, 9104, 0.02, 50.0, 600)
    counts = [count_plants(paths.labels, PlantOptions(window_px=w)) for w in (96, 250, 4096)]
    keyed = [
        c.plants.assign(x=c.plants.geometry.x.round(6), y=c.plants.geometry.y.round(6))
        .sort_values(["x", "y"])[["x", "y", "area_m2", "diseased"]]
        .reset_index(drop=True)
        for c in counts
    ]
    for other in keyed[1:]:
        assert keyed[0].equals(other)
    assert len({len(c.missing) for c in counts}) == 1


def test_missing_plants_are_empty_slots_between_plants(tmp_path: Path) -> None:
    survey = generate_survey(draw_params(9121, 600, 600, gsd_m=0.02), 9121)
    paths = write_survey(survey, tmp_path, "s")
    count = count_plants(paths.labels)
    t = survey.plants
    empty = (t.radius_m == 0) & t.inside
    slots = np.column_stack([t.x[empty], t.y[empty]])
    missing = np.column_stack([count.missing.geometry.x, count.missing.geometry.y])
    assert len(missing) > 10
    distance, _ = cKDTree(slots).query(missing)
    # Nearly every missing plant marks an unsown slot (not a plant the count missed).
    assert np.mean(distance < survey.params.plant_spacing_m / 3) > 0.9


def test_no_crop_means_no_plants(tmp_path: Path) -> None:
    path = tmp_path / "bare.classes.tif"
    write_raster(path, np.zeros((1, 200, 200), np.uint8))
    count = count_plants(path, PlantOptions(grid_m=1.0))
    assert len(count.plants) == 0 and count.rows is None
    assert sum(z["plants"] for z in count.zones) == 0 and len(count.zones) > 0


def test_a_class_raster_without_crop_classes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weeds.classes.tif"
    write_raster(path, np.zeros((1, 64, 64), np.uint8))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_0="soil", class_1="thistle")
    with pytest.raises(InputError, match=r"weeds\.classes\.tif: .*role crop or disease"):
        count_plants(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, SurveyPaths]:
    """A small generated survey through ``agriseg run --plants`` with the default model."""
    from agriseg_cli.main import main

    tmp = tmp_path_factory.mktemp("plants_run")
    paths = make_survey(tmp, 9106, 0.025, 30.0, 384)
    out = tmp / "out"
    assert main(["run", str(paths.image), "--out", str(out), "--plants", "--quiet"]) == 0
    return out, paths


def test_run_with_plants_counts_them(finished_run) -> None:
    out, paths = finished_run
    stem = paths.image.stem
    summary = json.loads((out / f"{stem}.plants.json").read_text())
    points = pyogrio.read_dataframe(out / f"{stem}.plants.gpkg", layer="plants")
    assert summary["plants"] == len(points) > 50
    assert summary["plants"] == pytest.approx(len(truth(paths)), rel=0.1)
    assert list(points.columns) == ["plant_id", "area_m2", "diseased", "geometry"]
    assert "missing_plants" in [
        name for name, _ in pyogrio.list_layers(out / f"{stem}.plants.gpkg")
    ]
    assert geopackage_version(out / f"{stem}.plants.gpkg") == GEOPACKAGE_1_2


def test_plants_command_per_field_and_zone(finished_run, run_cli, capsys, tmp_path: Path) -> None:
    out, paths = finished_run
    stem = paths.image.stem
    with rasterio.open(paths.image) as src:
        left, bottom, right, top = src.bounds
    middle = (left + right) / 2
    fields = gpd.GeoDataFrame(
        {"field_id": ["west", "east"]},
        geometry=[shapely.box(left, bottom, middle, top), shapely.box(middle, bottom, right, top)],
        crs=src.crs,
    )
    fields.to_file(tmp_path / "fields.gpkg")
    assert run_cli("plants", out, "--fields", tmp_path / "fields.gpkg", "--grid", "3") == 0
    assert "plants/m²" in capsys.readouterr().out
    summary = json.loads((out / f"{stem}.plants.json").read_text())
    assert [f["field_id"] for f in summary["fields"]] == ["west", "east"]
    assert sum(f["plants"] for f in summary["fields"]) == summary["plants"]
    assert sum(z["plants"] for z in summary["zones"]) == summary["plants"]
    assert sum(z["area_m2"] for z in summary["zones"]) == pytest.approx(summary["area_m2"])
    points = pyogrio.read_dataframe(out / f"{stem}.plants.gpkg", layer="plants")
    assert set(points["field_id"]) == {"west", "east"}
    assert (points["zone_id"] >= 0).all()


def test_plants_needs_a_run_folder(tmp_path: Path, run_cli, capsys) -> None:
    assert run_cli("plants", tmp_path / "nowhere") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err and "agriseg run" in err


def test_plants_grid_must_be_positive(finished_run, run_cli, capsys) -> None:
    out, _ = finished_run
    assert run_cli("plants", out, "--grid", "0") == 2
    assert "--grid 0" in capsys.readouterr().err


def test_batch_with_plants_counts_each_survey(tmp_path: Path, run_cli) -> None:
    paths = make_survey(tmp_path / "drawn", 9107, 0.02, 60.0, 256)
    surveys = tmp_path / "surveys"
    surveys.mkdir()
    (surveys / "a.tif").write_bytes(paths.image.read_bytes())
    args = ("--out", tmp_path / "out", "--plants", "--grid", "2", "--quiet", "--device", "cpu")
    assert run_cli("batch", surveys, *args) == 0
    summary = json.loads((tmp_path / "out" / "a" / "a.plants.json").read_text())
    assert summary["plants"] > 20 and summary["zones"]
    assert sum(z["plants"] for z in summary["zones"]) == summary["plants"]

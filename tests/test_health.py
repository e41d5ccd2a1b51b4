"""Health statistics, ground areas in any CRS, and the written health products."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio.errors
import shapely
from affine import Affine
from conftest import UTM, UTM_TRANSFORM, field_image, write_raster
from pyproj import CRS, Geod, Transformer

from agriseg.classes import CLASS_NAMES, DEFAULT_CLASSES, NODATA
from agriseg.errors import InputError
from agriseg.health.health_stats import class_areas_m2, health_indices, health_summary
from agriseg.health.products import (
    LARGE_SURVEY_PX,
    ClassRaster,
    HealthOptions,
    health_paths,
    plan_health,
    write_health_products,
)
from agriseg.io.areas import geometry_area_perimeter_m, pixel_area_rows_m2
from agriseg.io.atomic import TMP_MARK
from agriseg.io.grid import Grid

#: (CRS, transform) of ~2 cm pixels at 45° N, in UTM, geographic and Web Mercator.
GRIDS = {
    "utm": (UTM, UTM_TRANSFORM),
    "wgs84": ("EPSG:4326", Affine(2.54e-7, 0.0, 15.0, 0.0, -1.8e-7, 45.0)),
    "webmercator": ("EPSG:3857", Affine(0.028, 0.0, 1669792.0, 0.0, -0.028, 5621521.0)),
}


def field(height: int = 96, width: int = 80) -> np.ndarray:
    """Soil with a crop block, a weed patch, a diseased patch and a nodata strip."""
    data = np.zeros((height, width), dtype="uint8")
    data[10:80, 10:60] = 1
    data[20:35, 15:30] = 2
    data[50:70, 40:55] = 3
    data[:, -4:] = NODATA
    return data


def write_inputs(tmp_path: Path, data: np.ndarray, crs: str, transform: Affine) -> Path:
    write_raster(tmp_path / "f.classes.tif", data[None], crs, transform, nodata=NODATA, block=16)
    conf = np.where(data == NODATA, NODATA, 80).astype("uint8")
    write_raster(tmp_path / "f.confidence.tif", conf[None], crs, transform, nodata=NODATA, block=16)
    h, w = data.shape
    write_raster(tmp_path / "f.tif", field_image(h, w), crs, transform, block=16)
    return tmp_path / "f.classes.tif"


def run(tmp_path: Path, options: HealthOptions) -> dict:
    return write_health_products(
        tmp_path / "f.classes.tif",
        tmp_path / "f.confidence.tif",
        tmp_path / "f.tif",
        tmp_path,
        "f",
        options,
    )


def test_indices_formula() -> None:
    # soil, crop, weed, diseased
    out = health_indices(
        np.array([[10.0, 60.0, 20.0, 20.0], [5.0, 0.0, 0.0, 0.0]]), DEFAULT_CLASSES
    )
    assert out["vegetation_cover"] == pytest.approx([100 / 110, 0.0])
    assert out["weed_pressure"][0] == pytest.approx(0.25)
    assert out["disease_incidence"][0] == pytest.approx(0.25)
    assert out["health_score"][0] == pytest.approx(100 * 0.75 * 0.75)
    assert np.isnan(out["weed_pressure"][1]) and np.isnan(out["health_score"][1])
    only_weeds = health_indices(np.array([0.0, 0.0, 3.0, 0.0]), DEFAULT_CLASSES)
    assert only_weeds["health_score"] == 0.0 and np.isnan(only_weeds["disease_incidence"])


def test_summary_of_nothing_is_zero_and_undefined() -> None:
    summary = health_summary(np.zeros(4), DEFAULT_CLASSES)
    assert summary["valid_area_m2"] == 0
    assert all(
        summary["classes"][c.name] == {"area_m2": 0, "area_ha": 0, "share": 0, "role": c.role}
        for c in DEFAULT_CLASSES
    )
    assert summary["health_score"] is None and summary["weed_pressure"] is None
    json.dumps(summary, allow_nan=False)


def test_class_areas_are_pixel_counts_times_pixel_area(tmp_path: Path) -> None:
    data = field()
    path = write_inputs(tmp_path, data, *GRIDS["utm"])
    areas = class_areas_m2(path, 4, block_size=16)[0]
    counts = np.bincount(data[data != NODATA], minlength=4)
    assert areas == pytest.approx(counts * 0.02 * 0.02)


def geodesic_area(geom: shapely.Geometry, crs: str) -> float:
    """Independent reference: densified polygon in lon/lat on the WGS84 ellipsoid."""
    to_lonlat = Transformer.from_crs(CRS(crs), CRS(4326), always_xy=True)
    dense = shapely.segmentize(geom, abs(geom.bounds[2] - geom.bounds[0]) / 50)
    lonlat = shapely.transform(dense, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0])


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_area_m2_is_ground_area_in_any_crs(tmp_path: Path, grid: str) -> None:
    crs, transform = GRIDS[grid]
    data = field()
    write_inputs(tmp_path, data, crs, transform)
    options = HealthOptions(min_area_m2=0, block_size=32, preview=False, polygons="all")
    summary = run(tmp_path, options)
    frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    assert frame.crs == CRS(crs)
    for geom, area in zip(frame.geometry, frame["area_m2"], strict=True):
        assert area == pytest.approx(geodesic_area(geom, crs), rel=0.01)
    # The summary (pixel counts × pixel areas) agrees with the polygons.
    by_class = frame.groupby("class")["area_m2"].sum()
    for name in CLASS_NAMES:
        expected = summary["health"]["classes"][name]["area_m2"]
        assert by_class.get(name, 0.0) == pytest.approx(expected, rel=1e-3)
    # ~2 cm pixels in every grid, so the crop area is about its pixels × 4 cm².
    crop_px = ((data == 1).sum()) * 0.0004
    assert summary["health"]["classes"]["crop"]["area_m2"] == pytest.approx(crop_px, rel=0.05)


def test_areas_on_a_sphere_use_the_sphere() -> None:
    sphere = CRS("+proj=longlat +R=6371000 +no_defs")
    expected, _ = Geod(a=6371000, f=0).polygon_area_perimeter([10, 11, 11, 10], [50, 50, 51, 51])
    cell = np.array([shapely.box(10, 50, 11, 51)], dtype=object)
    area, _ = geometry_area_perimeter_m(cell, sphere)
    assert area[0] == pytest.approx(abs(expected), rel=1e-9)
    pixel = pixel_area_rows_m2(sphere, Affine(1.0, 0.0, 10.0, 0.0, -1.0, 51.0), np.array([0]), 0)
    assert pixel[0] == pytest.approx(abs(expected), rel=1e-9)


def test_perimeter_is_planar_in_utm() -> None:
    square = np.array([shapely.box(500000, 5300000, 500010, 5300005)], dtype=object)
    area, perimeter = geometry_area_perimeter_m(square, CRS(UTM))
    assert area[0] == pytest.approx(50.0) and perimeter[0] == pytest.approx(30.0)


def test_products_files_and_summary(tmp_path: Path) -> None:
    data = field()
    write_inputs(tmp_path, data, *GRIDS["utm"])
    summary = run(tmp_path, HealthOptions(block_size=32, polygons="all", whole_regions=True))
    paths = health_paths(tmp_path, "f")
    # A small survey: GeoJSON and GeoPackage (--format auto), no FlatGeobuf.
    assert summary["outputs"] == {k: str(p) for k, p in paths.items() if k != "fgb"}
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
    health = summary["health"]
    assert health["weed_pressure"] == pytest.approx(225 / 3200, abs=1e-6)
    assert health["disease_incidence"] == pytest.approx(300 / 3275, abs=1e-6)
    expected_score = 100 * (1 - health["weed_pressure"]) * (1 - health["disease_incidence"])
    assert health["health_score"] == pytest.approx(expected_score, abs=0.01)
    assert health["polygons"] == 4 and health["sieve_px"] == 25
    json.dumps(summary, allow_nan=False)

    collection = json.loads(paths["geojson"].read_text())
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    feature = collection["features"][0]
    props = feature["properties"]
    assert set(props) == {
        "class",
        "class_id",
        "area_m2",
        "perimeter_m",
        "mean_confidence",
        "lon",
        "lat",
        "mean_exg",  # the image is RGB: its vegetation index
    }
    assert props["mean_confidence"] == 80
    for feat in collection["features"]:
        rings = [shapely.LinearRing(r) for r in feat["geometry"]["coordinates"]]
        assert rings[0].is_ccw and not any(r.is_ccw for r in rings[1:])
        coords = np.concatenate([np.asarray(r) for r in feat["geometry"]["coordinates"]])
        assert np.allclose(coords, coords.round(7), rtol=0, atol=1e-12)
        assert coords[:, 0].min() > 14 and coords[:, 1].max() < 48  # lon, lat order
    geo = pyogrio.read_dataframe(paths["geojson"])
    assert geo.crs == CRS(4326) and shapely.is_valid(geo.geometry.to_numpy()).all()


def test_all_nodata_gives_empty_valid_outputs(tmp_path: Path) -> None:
    write_inputs(tmp_path, np.full((40, 40), NODATA, dtype="uint8"), *GRIDS["utm"])
    summary = run(tmp_path, HealthOptions(block_size=16, grid_m=0.5))
    assert summary["health"]["valid_area_m2"] == 0 and summary["health"]["polygons"] == 0
    assert summary["health"]["health_score"] is None
    paths = health_paths(tmp_path, "f")
    assert json.loads(paths["geojson"].read_text()) == {
        "type": "FeatureCollection",
        "features": [],
    }
    for layer in ("health", "zones"):
        info = pyogrio.read_info(paths["gpkg"], layer=layer)
        assert info["features"] == 0 and info["geometry_type"] == "Polygon"
    assert paths["preview"].exists()


def test_only_the_chosen_format_is_written(tmp_path: Path) -> None:
    write_inputs(tmp_path, field(), *GRIDS["utm"])
    summary = run(tmp_path, HealthOptions(formats=("geojson",), preview=False))
    assert set(summary["outputs"]) == {"geojson", "qml"}
    assert not health_paths(tmp_path, "f")["gpkg"].exists()


def test_simplified_output_is_valid(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    data = ((np.hypot(yy - 48, xx - 48) // 11) % 4).astype("uint8")
    write_inputs(tmp_path, data, *GRIDS["wgs84"])
    run(tmp_path, HealthOptions(simplify_m=0.05, block_size=32, preview=False, polygons="all"))
    frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    assert shapely.coverage_is_valid(frame.geometry.to_numpy())
    assert shapely.is_valid(frame.geometry.to_numpy()).all()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"formats": ("shp",)}, "--format"),
        ({"min_area_m2": -1}, "--min-area"),
        ({"simplify_m": -1}, "--simplify"),
        ({"grid_m": 0}, "--grid"),
        ({"grid_m": 5, "formats": ("geojson",)}, "gpkg"),
    ],
)
def test_bad_options_are_input_errors(options: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        HealthOptions(**options)


def test_raster_without_crs_is_an_input_error(tmp_path: Path) -> None:
    write_raster(tmp_path / "f.classes.tif", field()[None], None, nodata=NODATA, block=16)
    with pytest.raises(InputError, match=r"f\.classes\.tif.*no CRS"):
        write_health_products(tmp_path / "f.classes.tif", None, None, tmp_path, "f")


def test_default_polygons_are_the_weed_and_disease_patches(tmp_path: Path) -> None:
    write_inputs(tmp_path, field(), *GRIDS["utm"])
    summary = run(tmp_path, HealthOptions(block_size=32, preview=False))
    frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    assert sorted(frame["class"]) == ["diseased", "weed"]
    health = summary["health"]
    assert health["polygons"] == 2 and health["polygon_classes"] == ["weed", "diseased"]
    # Classes left out of the polygons keep their areas and statistics.
    assert health["classes"]["soil"]["area_m2"] > 0 and health["classes"]["crop"]["area_m2"] > 0
    assert health["vegetation_indices"]["exg"] is not None
    features = json.loads((tmp_path / "f.health.geojson").read_text())["features"]
    assert sorted(f["properties"]["class"] for f in features) == ["diseased", "weed"]


def test_polygons_of_named_classes_and_unknown_names(tmp_path: Path) -> None:
    write_inputs(tmp_path, field(), *GRIDS["utm"])
    run(tmp_path, HealthOptions(polygons="crop, weed", preview=False, formats=("gpkg",)))
    frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    assert set(frame["class"]) == {"crop", "weed"}
    run(tmp_path, HealthOptions(polygons="none", preview=False, formats=("gpkg",)))
    assert pyogrio.read_info(tmp_path / "f.health.gpkg", layer="health")["features"] == 0
    with pytest.raises(
        InputError, match=r"--polygons thistle: the model has no class thistle.*soil"
    ):
        run(tmp_path, HealthOptions(polygons="thistle"))


def test_field_spanning_regions_are_cut_on_the_block_grid(tmp_path: Path) -> None:
    data = field()
    write_inputs(tmp_path, data, *GRIDS["utm"])
    to_pixels = ~UTM_TRANSFORM
    for whole in (False, True):
        options = HealthOptions(
            block_size=32, min_area_m2=0, polygons="all", whole_regions=whole, preview=False
        )
        summary = run(tmp_path, options)
        frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
        cells: dict[str, list[bool]] = {}
        for name, geom in zip(frame["class"], frame.geometry, strict=True):
            left, bottom, right, top = geom.bounds
            col0, row0 = (round(v) for v in to_pixels * (left, top))
            col1, row1 = (round(v) for v in to_pixels * (right, bottom))
            in_one_cell = col0 // 32 == (col1 - 1) // 32 and row0 // 32 == (row1 - 1) // 32
            cells.setdefault(name, []).append(in_one_cell)
        # Weed and disease patches are whole either way (each lies in one region).
        assert len(cells["weed"]) == 1 and len(cells["diseased"]) == 1
        if whole:
            assert len(cells["soil"]) == 1 and len(cells["crop"]) == 1
        else:  # soil and crop span 3 x 3 cells of 32 px: one polygon per cell they touch
            assert all(cells["soil"]) and all(cells["crop"])
            assert len(cells["soil"]) == 9 and len(cells["crop"]) == 6
        # Cut or whole, the polygons cover exactly the classes' areas.
        by_class = frame.groupby("class")["area_m2"].sum()
        for name in CLASS_NAMES:
            expected = summary["health"]["classes"][name]["area_m2"]
            assert by_class[name] == pytest.approx(expected, rel=1e-6)


def test_flatgeobuf_holds_the_same_polygons_with_a_spatial_index(tmp_path: Path) -> None:
    write_inputs(tmp_path, field(), *GRIDS["utm"])
    options = HealthOptions(polygons="all", formats=("gpkg", "fgb"), block_size=32, preview=False)
    summary = run(tmp_path, options)
    paths = health_paths(tmp_path, "f")
    assert set(summary["outputs"]) == {"gpkg", "fgb", "qml"}
    fgb = pyogrio.read_dataframe(paths["fgb"])
    gpkg = pyogrio.read_dataframe(paths["gpkg"], layer="health")
    assert fgb.crs == gpkg.crs == CRS(UTM) and len(fgb) == summary["health"]["polygons"]
    # FlatGeobuf stores features in the order of its packed R-tree: compare sorted.
    fgb, gpkg = (f.iloc[np.argsort(shapely.to_wkb(f.geometry.values))] for f in (fgb, gpkg))
    assert np.array_equal(fgb.drop(columns="geometry").values, gpkg.drop(columns="geometry").values)
    assert shapely.equals_exact(fgb.geometry.values, gpkg.geometry.values, 0).all()
    assert pyogrio.read_info(paths["fgb"])["capabilities"]["fast_spatial_filter"]
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_large_surveys_get_no_geojson_and_one_pixel_simplification() -> None:
    def job(size: int, **options):
        grid = Grid(size, size, UTM_TRANSFORM, CRS(UTM))
        return plan_health(ClassRaster(grid, {}), HealthOptions(**options))

    small, large = 4096, int(LARGE_SURVEY_PX**0.5) + 1
    assert job(small).formats == ("geojson", "gpkg") and job(small).simplify_m == 0
    assert job(large).formats == ("gpkg",)
    assert job(large).simplify_m == pytest.approx(abs(UTM_TRANSFORM.a))
    assert job(large, simplify_m=0).simplify_m == 0
    assert job(large, formats=("auto", "fgb")).formats == ("gpkg", "fgb")
    assert job(small, formats=("fgb", "geojson")).formats == ("geojson", "fgb")


def test_flatgeobuf_writer_groups_appends_and_keeps_every_feature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopandas as gpd

    from agriseg.health import vector_outputs

    monkeypatch.setattr(vector_outputs, "FLATGEOBUF_GROUP", 3)
    boxes = [shapely.box(500000 + k, 5300000, 500001 + k, 5300001) for k in range(8)]
    frame = gpd.GeoDataFrame({"k": np.arange(8)}, geometry=boxes, crs=UTM)
    path = tmp_path / "x.fgb"
    with vector_outputs.LayerWriter(path, "health", frame.iloc[:0], "FlatGeobuf") as writer:
        for start in range(0, 8, 2):  # 4 batches of 2: appended as 4 + 4 (at >= 3)
            writer.write(frame.iloc[start : start + 2])
    back = pyogrio.read_dataframe(path)
    assert sorted(back["k"]) == list(range(8)) and back.crs == CRS(UTM)
    empty = tmp_path / "empty.fgb"
    with vector_outputs.LayerWriter(empty, "health", frame.iloc[:0], "FlatGeobuf"):
        pass
    assert len(pyogrio.read_dataframe(empty)) == 0


def test_the_preview_drawn_by_the_pass_is_the_one_render_preview_draws(tmp_path: Path) -> None:
    # The pass reads the image at preview size while its blocks run and blends the sieved
    # strips over it at the end; without sieving that is the class raster's preview.
    from PIL import Image

    from agriseg.health.preview import render_preview

    write_inputs(tmp_path, field(), *GRIDS["utm"])
    run(tmp_path, HealthOptions(min_area_m2=0, block_size=32, formats=("gpkg",)))
    drawn = np.asarray(Image.open(health_paths(tmp_path, "f")["preview"]))
    expected = np.asarray(render_preview(tmp_path / "f.classes.tif", tmp_path / "f.tif"))
    assert drawn.shape == expected.shape and (drawn == expected).all()
    assert (drawn != 255).any()  # the image is under the classes, not white


def test_a_preview_image_that_cannot_be_read_fails_the_pass_and_leaves_no_png(
    tmp_path: Path,
) -> None:
    write_inputs(tmp_path, field(), *GRIDS["utm"])
    (tmp_path / "f.tif").write_bytes(b"not a tiff")
    with pytest.raises(rasterio.errors.RasterioIOError, match="f.tif"):
        run(tmp_path, HealthOptions(formats=("gpkg",)))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["f.classes.tif", "f.confidence.tif", "f.tif"]


def test_class_areas_from_block_counts_are_the_bits_a_read_of_the_raster_gives(
    tmp_path: Path,
) -> None:
    from agriseg.health.health_stats import WHOLE, planar_class_areas, zone_class_areas

    rng = np.random.default_rng(3)
    data = rng.integers(0, 4, (70, 90), dtype="uint8")
    data[:5] = NODATA
    path = write_inputs(tmp_path, data, *GRIDS["utm"])
    counts = [
        np.bincount(data[r : r + 16, c : c + 16].ravel(), minlength=256)
        for r in range(0, 70, 16)
        for c in range(0, 90, 16)
    ]
    area = abs(UTM_TRANSFORM.a * UTM_TRANSFORM.e)
    expected = zone_class_areas(path, 4, [WHOLE], block_size=16)[0][0]
    assert planar_class_areas(counts, 4, area).tobytes() == expected.tobytes()


@pytest.mark.parametrize("strip_rows", [8, 32])
def test_the_pass_s_class_areas_match_a_read_of_the_class_raster_for_any_strip_height(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip_rows: int
) -> None:
    # Without sieving the sieved raster is the class raster: the areas the pass sums from
    # its blocks' counts (no working copy written) equal those read from the file.
    import agriseg.health.products

    monkeypatch.setattr(agriseg.health.products, "STRIP_ROWS", strip_rows)  # strips of a block
    path = write_inputs(tmp_path, field(), *GRIDS["utm"])
    options = HealthOptions(min_area_m2=0, block_size=32, preview=False, formats=("gpkg",))
    summary = run(tmp_path, options)
    areas = class_areas_m2(path, 4, block_size=32)[0]
    assert summary["health"]["classes"] == health_summary(areas, DEFAULT_CLASSES)["classes"]
    assert not list(tmp_path.glob("*sieved*"))


def test_feature_text_is_what_json_dumps_writes_for_every_column_type() -> None:
    import pandas as pd

    from agriseg.health.geojson import features_json

    frame = pd.DataFrame(
        {
            "class": ["weed", 'say "hi"', "café", "a{b}"],
            "class_id": np.array([2, 3, -1, 0], dtype="int64"),
            "small": np.array([1, 2, 3, 4], dtype="uint8"),
            "area_m2": [0.1, 1e-7, 12345678.901, float("nan")],
            "mean_exg": np.array([np.inf, -0.5, 1 / 3, 2.0], dtype="float32"),
            "sprayed": [True, False, True, False],
            "field_id": [None, 1, "x", 2.5],
        }
    )
    geometry = np.array(['{"type":"Point","coordinates":[1,2]}'] * 4)
    got = features_json({name: frame[name].to_numpy() for name in frame}, geometry)

    def plain(value):
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            return None
        return value

    for text, record, geom in zip(got, frame.to_dict("records"), geometry, strict=True):
        props = json.dumps(
            {k: plain(v) for k, v in record.items()}, allow_nan=False, separators=(",", ":")
        )
        assert text == f'{{"type":"Feature","properties":{props},"geometry":{geom}}}'
        assert json.loads(text)["properties"]["class"] == record["class"]
    assert features_json({}, geometry[:1])[0].startswith(
        '{"type":"Feature","properties":{},"geometry":'
    )


def test_geojson_text_made_here_while_blocks_run_or_on_the_runner_is_written_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import geopandas as gpd

    from agriseg.health import vector_outputs
    from agriseg.health.products import TaskRunner, _GeoJSONTexts
    from agriseg.health.vector_outputs import GeoJSONWriter

    monkeypatch.setattr(vector_outputs, "WRITE_SLICE", 4)
    boxes = [shapely.box(500000 + k, 5000000, 500000.5 + k, 5000000.5) for k in range(30)]
    frame = gpd.GeoDataFrame({"k": np.arange(30)}, geometry=boxes, crs=UTM)
    with GeoJSONWriter(tmp_path / "whole.geojson", CRS(UTM)) as writer:
        writer.write(frame)
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        block = pool.submit(gate.wait)  # a block still running on the runner's one worker
        with GeoJSONWriter(tmp_path / "parts.geojson", CRS(UTM)) as writer:
            texts = _GeoJSONTexts(writer, TaskRunner(pool.submit, parallel=1))
            texts.add(frame.iloc[:17])  # 5 slices: 2 wait here, 3 go to the runner
            texts.make_while(block)  # the runner is busy: this makes the 2
            texts.runner_idle = True
            texts.add(frame.iloc[17:])  # all 4 go to the runner, queued behind the block
            gate.set()
            texts.finish()
    whole = (tmp_path / "whole.geojson").read_bytes()
    assert (tmp_path / "parts.geojson").read_bytes() == whole
    assert len(json.loads(whole)["features"]) == 30

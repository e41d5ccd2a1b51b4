"""Per-field statistics and the management-zone grid, against direct computations."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from conftest import UTM, UTM_TRANSFORM, write_raster
from pyproj import CRS

from agriseg.classes import CLASSES, DEFAULT_CLASSES, NODATA
from agriseg.errors import InputError
from agriseg.health.health_stats import class_areas_m2, health_summary
from agriseg.health.products import HealthOptions, write_health_products
from agriseg.health.zones import (
    Fields,
    assign_fields,
    field_statistics,
    grid_crs,
    grid_zones,
    make_grid,
    read_fields,
)

PIXEL_M2 = 0.02 * 0.02


def classes(height: int = 100, width: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4, (height // 5, width // 5), dtype="uint8").repeat(5, 0).repeat(5, 1)
    data[:7, :9] = NODATA
    return data


def write_classes(tmp_path: Path, data: np.ndarray, transform: Affine = UTM_TRANSFORM) -> Path:
    return write_raster(tmp_path / "f.classes.tif", data[None], UTM, transform, NODATA, block=16)


def pixel_box(transform: Affine, col0: int, row0: int, col1: int, row1: int) -> shapely.Polygon:
    """Polygon on pixel edges covering columns col0:col1 and rows row0:row1."""
    x0, y0 = transform @ (col0, row0)
    x1, y1 = transform @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def direct_areas(data: np.ndarray) -> np.ndarray:
    return np.bincount(data[data != NODATA], minlength=4) * PIXEL_M2


def write_fields(path: Path, boxes: dict[str, shapely.Polygon], column: str = "name") -> Path:
    # Stored in lon/lat, so reading them reprojects back to the raster's UTM.
    frame = gpd.GeoDataFrame({column: list(boxes)}, geometry=list(boxes.values()), crs=UTM)
    frame.to_crs(4326).to_file(path)
    return path


def test_field_statistics_match_direct_counts(tmp_path: Path) -> None:
    data = classes()
    path = write_classes(tmp_path, data)
    boxes = {
        "north": pixel_box(UTM_TRANSFORM, 0, 0, 70, 40),
        "south": pixel_box(UTM_TRANSFORM, 20, 40, 120, 100),
    }
    fields = read_fields(write_fields(tmp_path / "fields.gpkg", boxes), CRS(UTM))
    assert fields.ids == ("north", "south")
    stats = field_statistics(path, DEFAULT_CLASSES, fields, block_size=32)
    expected = [
        health_summary(direct_areas(data[:40, :70]), DEFAULT_CLASSES),
        health_summary(direct_areas(data[40:, 20:]), DEFAULT_CLASSES),
    ]
    for got, want, fid in zip(stats, expected, fields.ids, strict=True):
        assert got["field_id"] == fid
        assert got["valid_area_m2"] == pytest.approx(want["valid_area_m2"])
        for name in ("weed_pressure", "disease_incidence", "health_score", "vegetation_cover"):
            assert got[name] == pytest.approx(want[name])
        for c in CLASSES:
            assert got["classes"][c.name] == pytest.approx(want["classes"][c.name])


def test_polygons_get_the_field_they_overlap_most() -> None:
    fields = Fields(
        ("a", "b"),
        np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)], dtype=object),
        Path("fields.gpkg"),
    )
    geoms = np.array(
        [shapely.box(8, 0, 15, 1), shapely.box(1, 1, 3, 3), shapely.box(30, 0, 31, 1)],
        dtype=object,
    )
    assert list(assign_fields(geoms, fields)) == ["b", "a", None]


def test_health_polygons_carry_field_ids(tmp_path: Path) -> None:
    data = classes()
    write_classes(tmp_path, data)
    boxes = {
        "7": pixel_box(UTM_TRANSFORM, 0, 0, 60, 100),
        "9": pixel_box(UTM_TRANSFORM, 60, 0, 120, 100),
    }
    fields_path = write_fields(tmp_path / "fields.geojson", boxes, column="Field_ID")
    summary = write_health_products(
        tmp_path / "f.classes.tif",
        None,
        None,
        tmp_path,
        "f",
        HealthOptions(min_area_m2=0, fields=fields_path, preview=False, block_size=32),
    )
    assert [f["field_id"] for f in summary["fields"]] == ["7", "9"]
    frame = pyogrio.read_dataframe(tmp_path / "f.health.gpkg", layer="health")
    geoms = frame.geometry.to_numpy()
    in_7 = shapely.area(shapely.intersection(geoms, boxes["7"]))
    in_9 = shapely.area(shapely.intersection(geoms, boxes["9"]))
    assert set(frame["field_id"]) == {"7", "9"}
    assert (np.where(in_7 > in_9, "7", "9") == frame["field_id"].to_numpy()).all()


def test_fields_without_id_column_use_row_numbers(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"crop": ["wheat"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=UTM)
    frame.to_file(tmp_path / "f.gpkg")
    assert read_fields(tmp_path / "f.gpkg", CRS(UTM)).ids == ("0",)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("problem", ["missing", "garbage", "points", "no_crs"])
def test_bad_fields_file_is_an_input_error(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "fields.geojson"
    if problem == "garbage":
        path.write_text("this is not a vector file")
    elif problem == "points":
        gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=UTM).to_file(path)
    elif problem == "no_crs":
        path = tmp_path / "fields.gpkg"
        gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(path)
    with pytest.raises(InputError) as err:
        read_fields(path, CRS(UTM))
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_grid_matches_direct_cell_counts(tmp_path: Path) -> None:
    data = classes()
    path = write_classes(tmp_path, data)
    zones = grid_zones(path, DEFAULT_CLASSES, size_m=0.5, block_size=32)  # cells of 25 × 25 px
    assert zones.crs == CRS(UTM)
    assert len(zones) == 4 * 5  # the raster's 100 × 120 px, every cell with valid pixels
    for zone in zones.itertuples():
        cell = data[zone.row * 25 : (zone.row + 1) * 25, zone.col * 25 : (zone.col + 1) * 25]
        areas = direct_areas(cell)
        assert zone.area_m2 == pytest.approx(areas.sum())
        for c in CLASSES:
            assert getattr(zone, f"{c.name}_share") == pytest.approx(areas[c.id] / areas.sum())
        crop, weed = areas[1], areas[2]
        if crop + weed:
            assert zone.weed_pressure == pytest.approx(weed / (crop + weed))
        else:
            assert np.isnan(zone.weed_pressure)
        assert zone.geometry.equals(
            pixel_box(
                UTM_TRANSFORM,
                zone.col * 25,
                zone.row * 25,
                (zone.col + 1) * 25,
                (zone.row + 1) * 25,
            )
        )


def test_grid_over_geographic_raster_is_in_utm(tmp_path: Path) -> None:
    data = classes(60, 60)
    transform = Affine(2.54e-7, 0.0, 15.0, 0.0, -1.8e-7, 45.0)
    write_raster(tmp_path / "g.tif", data[None], "EPSG:4326", transform, NODATA, block=16)
    zones = grid_zones(tmp_path / "g.tif", DEFAULT_CLASSES, size_m=0.4, block_size=16)
    assert zones.crs == CRS(32633)
    assert shapely.area(zones.geometry.to_numpy()) == pytest.approx(0.16)
    minx, miny, *_ = zones.total_bounds
    assert minx / 0.4 == pytest.approx(round(minx / 0.4)) and miny / 0.4 == pytest.approx(
        round(miny / 0.4)
    )
    assert zones["area_m2"].sum() == pytest.approx(class_areas_m2(tmp_path / "g.tif", 4).sum())
    shares = zones[[f"{c.name}_share" for c in CLASSES]].to_numpy()
    assert shares.sum(axis=1) == pytest.approx(np.ones(len(zones)))


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (10.3, 45.2, 32632),  # ordinary place: the 6° zone
        (-70.5, -30.2, 32719),  # southern hemisphere
        (5.5, 60.5, 32632),  # south-western Norway: zone 32, where 6° zones say 31
        (8.0, 78.0, 32631),  # Svalbard: zone 31, where 6° zones say 32
        (15.0, 78.0, 32633),
        (22.0, 78.0, 32635),  # Svalbard: zone 35, where 6° zones say 34
        (0.0, 86.0, 5041),  # beyond UTM: UPS North
    ],
)
def test_grid_over_geographic_raster_uses_the_local_utm_zone(
    lon: float, lat: float, epsg: int
) -> None:
    transform = Affine(1e-6, 0.0, lon, 0.0, -1e-6, lat)
    grid = make_grid(CRS(4326), transform, 50, 40, size_m=0.5)
    assert grid.crs == CRS(epsg)
    assert grid_crs(CRS(4326), (lon, lat, lon, lat)) == CRS(epsg)


def test_grid_keeps_a_projected_metric_crs() -> None:
    assert grid_crs(CRS(UTM), (5.5, 60.5, 5.5, 60.5)) == CRS(UTM)


def test_grid_too_fine_is_an_input_error(tmp_path: Path) -> None:
    path = write_classes(tmp_path, classes())
    with pytest.raises(InputError, match="choose a larger cell size"):
        grid_zones(path, DEFAULT_CLASSES, size_m=0.0001)

"""Inputs that cannot all be projected to WGS84, and unexpected exceptions in the CLI:
outputs with a warning, or one line, exit status 3 and nothing left in --out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from agriseg_cli.main import EXIT_INTERNAL, main
from conftest import field_image, write_raster
from pyproj import CRS
from rasterio.transform import from_bounds

import agriseg.health.products
from agriseg.health.geojson import to_rfc7946
from agriseg.health.vector_outputs import GeoJSONWriter

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")

#: A GOES-East-like full-disk view; the disk's edge is about 5.43e6 m from its centre.
GEOS = "+proj=geos +h=35786023 +lon_0=-75 +sweep=x +ellps=GRS80 +units=m +no_defs"
DISK_HALF_WIDTH_M = 6.0e6


def geostationary_disk(path: Path, size: int = 128) -> Path:
    """An RGB image of the whole Earth disk as a geostationary satellite sees it: the
    corner pixels are off the disk (PROJ projects them to infinity), like rasterio's
    ``tests/data/goes.tif``."""
    half = DISK_HALF_WIDTH_M
    transform = from_bounds(-half, -half, half, half, size, size)
    return write_raster(path, field_image(size, size), crs=GEOS, transform=transform)


def coordinates(feature: dict) -> np.ndarray:
    return shapely.get_coordinates(shapely.geometry.shape(feature["geometry"]))


def test_geostationary_disk_runs_with_unprojectable_polygons_left_out_of_geojson(tmp_path, capsys):
    image = geostationary_disk(tmp_path / "disk.tif")
    out = tmp_path / "out"
    code = main(["run", str(image), "--out", str(out), *FAST, "--grid", "2000000"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err
    summary = json.loads((out / "disk.summary.json").read_text())
    health = summary["health"]
    left_out = health["unprojectable_polygons"]
    assert 0 < left_out < health["polygons"]
    warning = [w for w in summary["warnings"] if "cannot be projected to WGS84" in w]
    assert len(warning) == 1 and f"{left_out} of {health['polygons']} polygons" in warning[0]
    assert f"agriseg run: warning: {warning[0]}" in err.splitlines()

    features = json.loads((out / "disk.health.geojson").read_text())["features"]
    assert len(features) == health["polygons"] - left_out
    assert all(np.isfinite(coordinates(f)).all() for f in features)
    assert all(math.isfinite(f["properties"]["lon"]) for f in features)

    polygons = gpd.read_file(out / "disk.health.gpkg", layer="health")
    assert len(polygons) == health["polygons"]  # every polygon, in the native CRS
    assert "Geostationary" in polygons.crs.coordinate_operation.method_name
    off_disk = polygons["lon"].isna()
    assert off_disk.any() and polygons["lat"].isna().equals(off_disk)
    assert off_disk.sum() <= left_out  # centroid off the disk: the polygon is too
    assert np.isfinite(polygons["area_m2"]).all()  # planar in the projected CRS
    assert len(gpd.read_file(out / "disk.health.gpkg", layer="zones")) == summary["zones"]["cells"]
    assert (out / "disk.preview.png").stat().st_size > 0


def test_geojson_writer_counts_polygons_off_the_disk(tmp_path):
    on_disk = shapely.box(0, 0, 1e5, 1e5)
    off_disk = shapely.box(5.9e6, 5.9e6, 6e6, 6e6)
    straddling = shapely.box(5e6, -1e5, 6e6, 1e5)  # crosses the disk's edge
    frame = gpd.GeoDataFrame(
        {"class": ["crop", "soil", "weed"]}, geometry=[on_disk, off_disk, straddling], crs=GEOS
    )
    path = tmp_path / "x.geojson"
    with GeoJSONWriter(path, CRS(GEOS)) as writer:
        writer.write(frame)
    assert writer.unprojectable == 2
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["class"] for f in features] == ["crop"]


def test_polygon_around_the_pole_is_unprojectable_when_snapped():
    # North polar stereographic: a square around the pole is not a polygon in lon/lat.
    edge = np.linspace(-1e5, 1e5, 21)
    ring = np.concatenate(
        [
            np.column_stack([edge, np.full(21, -1e5)]),
            np.column_stack([np.full(21, 1e5), edge]),
            np.column_stack([edge[::-1], np.full(21, 1e5)]),
            np.column_stack([np.full(21, -1e5), edge[::-1]]),
        ]
    )
    around_pole = shapely.Polygon(ring)
    beside_pole = shapely.box(1e6, 1e6, 1.1e6, 1.1e6)
    lonlat = to_rfc7946(np.array([around_pole, beside_pole]), CRS("EPSG:3995"))
    assert lonlat[0] is None
    assert lonlat[1].is_valid and not lonlat[1].is_empty


@pytest.fixture
def health_pass_bug(monkeypatch):
    """Make the health pass raise an exception agriseg does not expect (our own function)."""

    def broken(*args, **kwargs):
        raise RuntimeError("polygon table\nfailed")

    monkeypatch.setattr(agriseg.health.products, "polygon_attributes", broken)


# The strip reader abandoned by the error must not fail later on leaving a GDAL
# environment that is gone (rasterio's EnvError, once a second traceback).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("out_exists", [False, True])
def test_unexpected_exception_in_health_pass_is_one_line(
    tmp_path, capsys, health_pass_bug, out_exists
):
    image = write_raster(tmp_path / "field.tif", field_image(128, 128))
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    code = main(["run", str(image), "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL == 3
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"agriseg run: internal error: RuntimeError: polygon table failed (input: {image}) — "
        "rerun with --debug for the traceback and report it"
    ]
    assert out.exists() == out_exists
    assert not out_exists or not any(out.iterdir())


def test_unexpected_exception_with_debug_shows_the_traceback(tmp_path, health_pass_bug):
    image = write_raster(tmp_path / "field.tif", field_image(128, 128))
    with pytest.raises(RuntimeError, match="polygon table"):
        main(["run", str(image), "--out", str(tmp_path / "out"), *FAST, "--debug"])
    assert not (tmp_path / "out").exists()


def test_degrees_beyond_the_pole_are_refused_in_one_line(tmp_path, capsys):
    # Latitudes 80°..100°: pixels past the pole are nowhere, so no product is right.
    transform = from_bounds(0, 80, 10, 100, 64, 64)
    image = write_raster(tmp_path / "polar.tif", field_image(64, 64), "EPSG:4326", transform)
    out = tmp_path / "out"
    code = main(["run", str(image), "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.splitlines() == [
        f"agriseg run: error: {image}: its rows reach latitude 80° to 100°, beyond the poles "
        "(±90°); check the geotransform, or the CRS (--assume-crs) if it is not in degrees"
    ]

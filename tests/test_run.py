"""`agriseg run` end to end on small real GeoTIFFs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import field_image, read_classes, write_raster
from pyproj import Geod
from rasterio.enums import ColorInterp

from agriseg.classes import CLASS_NAMES, NODATA

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")


def run_and_read(run_cli, path, out, *extra):
    assert run_cli("run", path, "--out", out, *FAST, *extra) == 0
    return read_classes(out, path.stem)


def test_outputs_are_on_the_input_grid_with_nodata_where_input_is_nodata(tmp_path, run_cli):
    img = field_image(150, 170)
    img[:, 20:40, 30:90] = 0  # nodata pixels (all bands 0)
    path = write_raster(tmp_path / "field.tif", img, nodata=0)
    classes, meta = run_and_read(run_cli, path, tmp_path / "out")
    with rasterio.open(path) as src:
        assert meta["crs"] == src.crs
        assert meta["transform"] == src.transform
        assert meta["shape"] == (src.height, src.width)
        invalid = src.dataset_mask() == 0
    assert meta["nodata"] == NODATA
    assert [meta["tags"][f"class_{i}"] for i in range(4)] == list(CLASS_NAMES)
    assert ((classes == NODATA) == invalid).all()
    assert invalid.sum() == 20 * 60
    with rasterio.open(tmp_path / "out" / "field.confidence.tif") as conf_src:
        conf = conf_src.read(1)
        assert conf_src.transform == meta["transform"]
    assert ((conf == NODATA) == invalid).all()
    assert conf[~invalid].max() <= 100


def test_class_raster_has_colour_table_and_summary(tmp_path, run_cli):
    path = write_raster(tmp_path / "f.tif", field_image(100, 100))
    run_and_read(run_cli, path, tmp_path / "out")
    with rasterio.open(tmp_path / "out" / "f.classes.tif") as src:
        cmap = src.colormap(1)
        assert src.profile["tiled"] and src.compression is not None
    assert cmap[NODATA][3] == 0 and cmap[1][3] == 255
    summary = json.loads((tmp_path / "out" / "f.summary.json").read_text())
    assert [c["class"] for c in summary["classes"]] == list(CLASS_NAMES)
    assert sum(c["pixels"] for c in summary["classes"]) == 100 * 100
    assert summary["classes"][0]["area_m2"] == pytest.approx(
        summary["classes"][0]["pixels"] * 0.02 * 0.02, rel=1e-6
    )
    assert {"read", "infer", "stitch", "write", "total"} <= set(summary["timings_s"])


def test_alpha_band_becomes_nodata(tmp_path, run_cli):
    img = field_image(96, 120)
    alpha = np.full((1, 96, 120), 255, dtype="uint8")
    alpha[0, :, :25] = 0
    path = write_raster(
        tmp_path / "rgba.tif",
        np.concatenate([img, alpha]),
        colorinterp=(ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha),
    )
    classes, _ = run_and_read(run_cli, path, tmp_path / "out")
    assert (classes[:, :25] == NODATA).all()
    assert (classes[:, 25:] != NODATA).all()


def test_internal_mask_becomes_nodata(tmp_path, run_cli):
    mask = np.ones((130, 140), dtype=bool)
    mask[60:, 100:] = False
    path = write_raster(tmp_path / "masked.tif", field_image(130, 140), mask=mask)
    classes, _ = run_and_read(run_cli, path, tmp_path / "out")
    assert ((classes == NODATA) == ~mask).all()


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (129, 300), (301, 95)])
def test_odd_sizes_and_rasters_smaller_than_a_tile(tmp_path, run_cli, shape):
    path = write_raster(tmp_path / "odd.tif", field_image(*shape))
    classes, meta = run_and_read(run_cli, path, tmp_path / "out")
    assert classes.shape == shape
    assert (classes != NODATA).all()
    assert set(np.unique(classes)) <= {0, 1, 2, 3}


@pytest.fixture
def reference(tmp_path, run_cli):
    img = field_image(160, 200, seed=3)
    path = write_raster(tmp_path / "ref.tif", img)
    classes, _ = run_and_read(run_cli, path, tmp_path / "ref_out")
    return img, classes


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_uint16_input_is_normalised_like_uint8(tmp_path, run_cli, reference):
    img, expected = reference
    path = write_raster(tmp_path / "u16.tif", img.astype("uint16") * 257)
    classes, _ = run_and_read(run_cli, path, tmp_path / "out")
    assert agreement(classes, expected) >= 0.999


def test_float_reflectance_input_is_normalised_like_uint8(tmp_path, run_cli, reference):
    img, expected = reference
    path = write_raster(tmp_path / "f32.tif", (img / 255.0).astype("float32"))
    classes, _ = run_and_read(run_cli, path, tmp_path / "out")
    assert agreement(classes, expected) >= 0.999


def test_bgr_file_is_read_in_rgb_order_by_colour_interpretation(tmp_path, run_cli, reference):
    img, expected = reference
    path = write_raster(
        tmp_path / "bgr.tif",
        img[::-1].copy(),
        colorinterp=(ColorInterp.blue, ColorInterp.green, ColorInterp.red),
    )
    classes, _ = run_and_read(run_cli, path, tmp_path / "out")
    assert np.array_equal(classes, expected)


def test_bands_option_picks_bands_in_the_given_order(tmp_path, run_cli, reference):
    img, expected = reference
    extra = np.zeros((1, *img.shape[1:]), dtype="uint8")
    path = write_raster(tmp_path / "bands.tif", np.concatenate([extra, img[::-1]]))
    classes, _ = run_and_read(run_cli, path, tmp_path / "out", "--bands", "4,3,2")
    assert np.array_equal(classes, expected)


def test_rotated_geotransform_is_kept(tmp_path, run_cli):
    transform = (
        Affine.translation(500000, 5300000) @ Affine.rotation(20) @ Affine.scale(0.02, -0.02)
    )
    path = write_raster(tmp_path / "rot.tif", field_image(90, 110), transform=transform)
    classes, meta = run_and_read(run_cli, path, tmp_path / "out")
    assert meta["transform"].almost_equals(transform)
    summary = json.loads((tmp_path / "out" / "rot.summary.json").read_text())
    total = sum(c["area_m2"] for c in summary["classes"])
    assert total == pytest.approx(90 * 110 * 0.02**2, rel=1e-6)


def test_geographic_crs_gets_geodesic_areas(tmp_path, run_cli):
    res = 2e-7  # about 2 cm of latitude
    transform = Affine(res, 0, 15.0, 0, -res, 47.8)
    path = write_raster(
        tmp_path / "geo.tif", field_image(120, 150), crs="EPSG:4326", transform=transform
    )
    classes, meta = run_and_read(run_cli, path, tmp_path / "out")
    assert meta["crs"].to_epsg() == 4326
    summary = json.loads((tmp_path / "out" / "geo.summary.json").read_text())
    total = sum(c["area_m2"] for c in summary["classes"])
    lons = [15.0, 15.0 + 150 * res, 15.0 + 150 * res, 15.0]
    lats = [47.8, 47.8, 47.8 - 120 * res, 47.8 - 120 * res]
    geodesic, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    assert total == pytest.approx(abs(geodesic), rel=0.01)

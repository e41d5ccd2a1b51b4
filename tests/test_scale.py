"""GSD-aware inference: the scale decision alone, then runs on rasters of other GSDs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import field_image, read_classes, write_raster
from pyproj import Geod

from agriseg.errors import InputError
from agriseg.models.inference import resize_tiles
from agriseg.segmentation.scale import (
    COARSER_TOLERANCE,
    FINER_TOLERANCE,
    MAX_DOWNSAMPLE,
    MAX_UPSAMPLE,
    UNRELIABLE_COARSER,
    decide_scale,
    tile_grid,
)

MODEL_GSD = 0.0292  # the default model's
FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32", "--no-preview")


def utm(gsd: float) -> Affine:
    return Affine(gsd, 0.0, 500000.0, 0.0, -gsd, 5300000.0)


def summary_of(out, stem):
    return json.loads((out / f"{stem}.summary.json").read_text())


@pytest.mark.parametrize("ratio", [1.0, 0.7, 0.68, 1.19])
def test_gsd_within_tolerance_is_used_as_it_is(ratio):
    scale = decide_scale(MODEL_GSD * ratio, MODEL_GSD)
    assert not scale.resampled and not scale.unreliable
    assert scale.factor == 1.0 and scale.warnings() == []


def test_finer_input_is_shrunk_only_to_the_edge_of_the_tolerance():
    scale = decide_scale(0.007, MODEL_GSD)
    assert scale.resampled
    assert scale.target_gsd_m == pytest.approx(MODEL_GSD / FINER_TOLERANCE)
    assert scale.factor == pytest.approx(0.007 * FINER_TOLERANCE / MODEL_GSD)
    very_fine = decide_scale(0.001, MODEL_GSD)
    assert very_fine.factor == pytest.approx(1 / MAX_DOWNSAMPLE)


def test_coarser_input_is_enlarged_to_the_model_gsd_but_never_beyond_the_cap():
    scale = decide_scale(MODEL_GSD * COARSER_TOLERANCE * 1.01, MODEL_GSD)
    assert scale.resampled and not scale.unreliable
    assert scale.target_gsd_m == pytest.approx(MODEL_GSD)
    assert decide_scale(0.05, MODEL_GSD).factor == pytest.approx(0.05 / MODEL_GSD)
    aerial = decide_scale(0.30, 0.02)
    assert aerial.resampled and aerial.unreliable
    assert aerial.factor == pytest.approx(MAX_UPSAMPLE)


def test_far_too_coarse_input_is_unreliable_even_without_resampling():
    scale = decide_scale(0.30, 0.02, "off")
    assert not scale.resampled and scale.unreliable
    [warning] = scale.warnings()
    assert "30.0 cm" in warning and "2.0 cm" in warning and "unreliable" in warning
    assert not decide_scale(0.02 * UNRELIABLE_COARSER * 0.99, 0.02).unreliable


@pytest.mark.parametrize(
    ("input_gsd", "model_gsd"), [(0.007, None), (0.007, 0.0), (None, 0.02), (None, None)]
)
def test_unknown_gsd_never_resamples(input_gsd, model_gsd):
    scale = decide_scale(input_gsd, model_gsd)
    assert not scale.resampled and not scale.unreliable and scale.factor == 1.0


def test_bad_mode_or_gsd_is_rejected_with_the_value():
    with pytest.raises(InputError, match="'sometimes'.*auto, off"):
        decide_scale(0.02, 0.02, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="-0.01"):
        decide_scale(-0.01, 0.02)
    with pytest.raises(InputError, match="input ground sampling distance 0.0 m"):
        decide_scale(0.0, 0.02)


def test_resampled_grid_scales_tile_and_overlap_to_input_pixels():
    grid = tile_grid(1000, 1000, decide_scale(0.007, MODEL_GSD), 512, 64, 4)
    assert grid.tile % 2 == 0 and grid.overlap % 2 == 0
    assert grid.tile == pytest.approx(512 / decide_scale(0.007, MODEL_GSD).factor, abs=2)
    assert grid.overlap == pytest.approx(64 * grid.tile / 512, abs=2)
    coarse = tile_grid(1000, 1000, decide_scale(0.05, MODEL_GSD), 512, 64, 4)
    assert coarse.tile < 512 and coarse.overlap < 64
    with pytest.raises(InputError, match="--tile-size 500"):
        tile_grid(1000, 1000, decide_scale(0.007, MODEL_GSD), 500, 64, 4)


def test_resized_probabilities_stay_probabilities():
    import torch

    probs = torch.softmax(torch.randn(2, 4, 96, 96), dim=1).numpy()
    for size in (40, 200):
        out = resize_tiles(probs, size)
        assert out.shape == (2, 4, size, size) and out.dtype == np.float32
        np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
        # The torch engine resizes on its device with torch's copy of the same filter.
        shrink = size < 96
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(probs), (size, size), mode="bilinear", antialias=shrink
        )
        np.testing.assert_allclose(out, expected.numpy(), atol=1e-4)


def test_finer_raster_is_resampled_and_stays_on_its_grid(tmp_path, run_cli):
    img = field_image(256, 300)
    # Finer than the 0.5 cm down to which the shipped model was measured to hold up.
    path = write_raster(tmp_path / "fine.tif", img, transform=utm(0.001))
    assert run_cli("run", path, "--out", tmp_path / "auto", *FAST) == 0
    assert run_cli("run", path, "--out", tmp_path / "off", *FAST, "--resample", "off") == 0
    classes, meta = read_classes(tmp_path / "auto", "fine")
    with rasterio.open(path) as src:
        assert meta["crs"] == src.crs and meta["transform"] == src.transform
        assert meta["shape"] == classes.shape == (src.height, src.width)
    scale = summary_of(tmp_path / "auto", "fine")["scale"]
    assert scale["resampled"] and scale["input_gsd_m"] == pytest.approx(0.001)
    assert scale["model_tile_px"] == 128 and scale["input_tile_px"] > 2 * 128
    off = summary_of(tmp_path / "off", "fine")
    assert not off["scale"]["resampled"] and off["scale"]["input_tile_px"] == 128
    assert summary_of(tmp_path / "auto", "fine")["tiles"] < off["tiles"]
    assert (classes != 255).all()


def test_off_gives_what_a_run_at_the_model_gsd_gives(tmp_path, run_cli):
    img = field_image(160, 200, seed=3)
    fine = write_raster(tmp_path / "a.tif", img, transform=utm(0.007))
    usual = write_raster(tmp_path / "b.tif", img, transform=utm(0.02))
    assert run_cli("run", fine, "--out", tmp_path / "a", *FAST, "--resample", "off") == 0
    assert run_cli("run", usual, "--out", tmp_path / "b", *FAST) == 0
    assert np.array_equal(
        read_classes(tmp_path / "a", "a")[0], read_classes(tmp_path / "b", "b")[0]
    )


def test_two_centimetre_raster_gives_identical_outputs_either_way(tmp_path, run_cli):
    path = write_raster(tmp_path / "f.tif", field_image(150, 170, seed=5))
    assert run_cli("run", path, "--out", tmp_path / "auto", *FAST) == 0
    assert run_cli("run", path, "--out", tmp_path / "off", *FAST, "--resample", "off") == 0
    assert not summary_of(tmp_path / "auto", "f")["scale"]["resampled"]
    for product in ("classes", "confidence"):
        a = (tmp_path / "auto" / f"f.{product}.tif").read_bytes()
        b = (tmp_path / "off" / f"f.{product}.tif").read_bytes()
        assert a == b


def test_geographic_raster_uses_ground_distance(tmp_path, run_cli):
    res = 1.2e-8  # degrees: about 1.3 mm of latitude, 0.9 mm of longitude at 47.8°N
    transform = Affine(res, 0, 15.0, 0, -res, 47.8)
    path = write_raster(
        tmp_path / "g.tif", field_image(200, 220), crs="EPSG:4326", transform=transform
    )
    assert run_cli("run", path, "--out", tmp_path / "out", *FAST) == 0
    geod = Geod(ellps="WGS84")
    lat = 47.8 - 100 * res
    _, _, dx = geod.inv(15.0, lat, 15.0 + res, lat)
    _, _, dy = geod.inv(15.0, lat, 15.0, lat + res)
    scale = summary_of(tmp_path / "out", "g")["scale"]
    assert scale["input_gsd_m"] == pytest.approx(np.sqrt(dx * dy), rel=0.01)
    assert scale["resampled"]
    classes, meta = read_classes(tmp_path / "out", "g")
    assert meta["transform"] == transform and classes.shape == (200, 220)


def test_gsd_option_overrides_the_file(tmp_path, run_cli):
    path = write_raster(tmp_path / "f.tif", field_image(120, 130))
    assert run_cli("run", path, "--out", tmp_path / "out", *FAST, "--gsd", "0.001") == 0
    scale = summary_of(tmp_path / "out", "f")["scale"]
    assert scale["input_gsd_m"] == pytest.approx(0.001) and scale["resampled"]


def test_far_too_coarse_raster_warns_in_summary_and_on_stderr(tmp_path, run_cli, capsys):
    path = write_raster(tmp_path / "park.tif", field_image(96, 96), transform=utm(0.3))
    assert run_cli("run", path, "--out", tmp_path / "out", *FAST) == 0
    warnings = summary_of(tmp_path / "out", "park")["warnings"]
    assert any("unreliable" in w and "30.0 cm" in w for w in warnings)
    assert "unreliable at this scale" in capsys.readouterr().err


def test_bench_model_only_pass_runs_the_resampled_tiles(tmp_path):
    from agriseg.bench import model_only_seconds
    from agriseg.config import RunConfig

    path = write_raster(tmp_path / "fine.tif", field_image(200, 200), transform=utm(0.001))
    config = RunConfig(device="cpu", tile_size=64, overlap=16, threads=1)
    seconds = model_only_seconds(path, config, repeats=1)
    assert set(seconds) <= {"run", "all_cores"}
    assert all(p.wall_s > 0 and p.cpu_s > 0 for p in seconds.values())


def test_plain_photo_is_resampled_only_when_its_gsd_is_given(tmp_path, run_cli):
    from PIL import Image

    Image.fromarray(field_image(150, 160).transpose(1, 2, 0).copy()).save(tmp_path / "shot.png")
    assert run_cli("run", tmp_path / "shot.png", "--out", tmp_path / "plain", *FAST) == 0
    scale = summary_of(tmp_path / "plain", "shot")["scale"]
    assert scale["input_gsd_m"] is None and not scale["resampled"]
    assert (
        run_cli("run", tmp_path / "shot.png", "--out", tmp_path / "gsd", *FAST, "--gsd", "0.001")
        == 0
    )
    assert summary_of(tmp_path / "gsd", "shot")["scale"]["resampled"]
    with rasterio.open(tmp_path / "gsd" / "shot.classes.tif") as src:
        assert src.crs is None and (src.height, src.width) == (150, 160)

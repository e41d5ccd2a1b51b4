"""Empty areas are free: tiles, cores and health-pass panes without a valid pixel are
skipped, and skipping changes no output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import UTM_TRANSFORM, field_image, write_raster
from rasterio.windows import Window

import agriseg.classes
from agriseg.config import RunConfig
from agriseg.health.products import HealthOptions
from agriseg.io.coverage import read_coverage
from agriseg.run import segment_raster

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from empty_benchmark import write_patch_alone, write_patch_survey  # noqa: E402

VOLATILE = ("timings_s", "peak_rss_mb", "outputs", "input", "model", "tiles_run")


def flight_area(height: int, width: int) -> np.ndarray:
    """An irregular valid area (a tilted ellipse and a thin arm) on a nodata rectangle."""
    yy, xx = np.mgrid[0:height, 0:width]
    u, v = (xx - 0.45 * width) * 0.8 + (yy - 0.5 * height) * 0.6, (yy - 0.5 * height) * 0.8
    ellipse = (u / (0.3 * width)) ** 2 + (v / (0.25 * height)) ** 2 < 1
    arm = (abs(yy - 0.2 * height - 0.3 * xx) < 3) & (xx > 0.6 * width)
    return ellipse | arm


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("layout", ["mask", "sparse"])
def test_skipping_empty_tiles_changes_no_output(tmp_path: Path, monkeypatch, layout: str) -> None:
    if layout == "mask":  # an irregular flight area: the chunks find their empty tiles
        image = write_raster(
            tmp_path / "survey.tif", field_image(420, 500, seed=5), mask=flight_area(420, 500)
        )
    else:  # a sparse file: chunks under its missing blocks are not even read
        image = write_patch_survey(tmp_path / "survey.tif", 1100, 300, (530, 610))
    health = HealthOptions(pane_size=64, min_area_m2=0.004, formats=("geojson",))
    config = RunConfig(
        device="cpu",
        tile_size=128,
        overlap=32,
        batch_size=3,
        health=health,
        # both ways of the health pass: strips as they are made, panes of the finished files
        stream_health=layout == "mask",
    )
    runs = {}
    for skip in (True, False):
        monkeypatch.setattr(agriseg.classes, "SKIP_EMPTY", skip)
        runs[skip] = segment_raster(image, tmp_path / str(skip), config)
    skipped, full = runs[True], runs[False]
    assert skipped.summary["tiles_run"] < full.summary["tiles_run"] == full.summary["tiles"]
    for name in ("classes", "confidence"):
        assert np.array_equal(pixels(skipped.outputs[name]), pixels(full.outputs[name])), (
            f"{name} differ"
        )
    for name in ("survey.health.geojson", "survey.health.qml"):
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes()
    same = {k: v for k, v in skipped.summary.items() if k not in VOLATILE}
    assert same == {k: v for k, v in full.summary.items() if k not in VOLATILE}
    assert skipped.summary["health"]["polygons"] > 10
    if layout == "sparse":  # RGB named bands: polygons carry vegetation indices too
        assert skipped.summary["health"]["vegetation_indices"]["exg"] is not None
    json.dumps(skipped.summary)


def tiles_touching(start: int, stop: int, n: int, stride: int, tile: int, pad: int) -> int:
    """How many of ``n`` tiles along one axis (tile ``k`` spans ``[k*stride - pad,
    k*stride - pad + tile)``) overlap the pixels ``[start, stop)``."""
    return sum(k * stride - pad < stop and k * stride - pad + tile > start for k in range(n))


def test_the_model_sees_only_tiles_with_valid_pixels(tmp_path: Path) -> None:
    size, patch, at = 2048, 200, (700, 1100)
    image = write_patch_survey(tmp_path / "big.tif", size, patch, at)
    # At the input's own scale, so the tile grid is the one counted here.
    config = RunConfig(device="cpu", tile_size=256, overlap=64, engine="torch", resample="off")
    summary = segment_raster(image, tmp_path / "out", config).summary
    stride, pad = 256 - 64, 32  # pad: half the overlap, rounded to the model's 32 px
    n = -(-size // stride)
    rows = tiles_touching(at[0], at[0] + patch, n, stride, 256, pad)
    cols = tiles_touching(at[1], at[1] + patch, n, stride, 256, pad)
    assert summary["tiles"] == n * n == 121
    assert summary["tiles_run"] == rows * cols == 4
    assert summary["valid_pixels"] == patch * patch


def test_coverage_lists_the_blocks_a_sparse_file_leaves_out(tmp_path: Path) -> None:
    image = write_patch_survey(tmp_path / "sparse.tif", 2048, 300, (600, 1000))
    coverage = read_coverage(image)
    assert coverage is not None and coverage.block_shape == (512, 512)
    with rasterio.open(image) as src:
        valid = src.dataset_mask() > 0
    # Never under-reports: every block with a valid pixel may be valid; here exactly those.
    blocks = valid.reshape(4, 512, 4, 512).any(axis=(1, 3))
    assert np.array_equal(coverage.maybe_valid, blocks) and blocks.sum() == 2
    assert coverage.any_valid(Window(1000, 600, 1, 1))
    assert not coverage.any_valid(Window(0, 0, 2048, 500))


def test_coverage_of_a_sparse_file_with_a_nodata_value(tmp_path: Path) -> None:
    profile = {
        "driver": "GTiff", "width": 256, "height": 256, "count": 3, "dtype": "uint8",
        "nodata": 0, "tiled": True, "blockxsize": 64, "blockysize": 64, "sparse_ok": True,
        "crs": "EPSG:32633", "transform": UTM_TRANSFORM,
    }  # fmt: skip
    path = tmp_path / "nodata.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(field_image(64, 64), window=Window(64, 128, 64, 64))
    coverage = read_coverage(path)
    assert coverage is not None
    assert np.argwhere(coverage.maybe_valid).tolist() == [[2, 1]]


def test_files_whose_layout_says_nothing_have_no_coverage(tmp_path: Path) -> None:
    plain = write_raster(tmp_path / "plain.tif", field_image(256, 256))  # every pixel valid
    masked = write_raster(
        tmp_path / "masked.tif", field_image(256, 256), mask=flight_area(256, 256)
    )
    assert read_coverage(plain) is None and read_coverage(masked) is None
    dense = read_coverage(write_patch_alone(tmp_path / "dense.tif", 512))  # alpha, all written
    assert dense is not None and dense.maybe_valid.all()

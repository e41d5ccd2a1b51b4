"""Overviews agriseg builds for its COGs, against GDAL's own (``MODE``, ``AVERAGE``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import UTM, UTM_TRANSFORM
from rasterio.enums import Resampling
from rasterio.windows import Window

from agriseg.classes import NODATA
from agriseg.segmentation.overviews import (
    build_overviews,
    mean_2x2,
    mode_2x2,
    overview_factors,
)


def write(path: Path, data: np.ndarray) -> Path:
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "width": data.shape[1],
        "height": data.shape[0],
        "crs": UTM,
        "transform": UTM_TRANSFORM,
        "nodata": NODATA,
        "tiled": True,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def gdal_level(path: Path, resampling: Resampling) -> np.ndarray:
    """GDAL's first overview level of ``path`` (built on a copy)."""
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2], resampling)
    with rasterio.open(path, "r", OVERVIEW_LEVEL=0) as src:
        return src.read(1)


@pytest.mark.parametrize(
    "reduce, resampling", [(mode_2x2, Resampling.mode), (mean_2x2, Resampling.average)]
)
def test_a_level_is_what_gdal_makes(tmp_path, reduce, resampling):
    rng = np.random.default_rng(1)
    # Ties of two and four classes, windows partly and wholly nodata.
    data = rng.integers(0, 4 if reduce is mode_2x2 else 101, (302, 204), dtype=np.uint8)
    data[rng.random(data.shape) < 0.3] = NODATA
    data[:40, :60] = NODATA
    ours = reduce(data)
    theirs = gdal_level(write(tmp_path / "gdal.tif", data), resampling)
    assert ours.shape == theirs.shape == (151, 102)
    assert np.array_equal(ours, theirs)


def test_factors_down_to_one_block():
    assert overview_factors(1300, 1300, 512) == [2, 4]
    assert overview_factors(512, 512, 512) == []
    assert overview_factors(40000, 300, 512) == [2, 4, 8, 16, 32, 64, 128]


def test_windows_without_data_are_skipped_and_stay_nodata(tmp_path):
    data = np.full((5000, 3000), NODATA, np.uint8)
    data[2300:3400, 1000:2100] = np.random.default_rng(2).integers(0, 4, (1100, 1100))
    path = write(tmp_path / "classes.tif", data)
    asked = []

    def has_data(window: Window) -> bool:
        asked.append(window)
        (r0, r1), (c0, c1) = window.toranges()
        return bool(r0 < 3400 and r1 > 2300 and c0 < 2100 and c1 > 1000)

    levels = build_overviews(path, mode_2x2, overview_factors(3000, 5000, 512), has_data)
    assert len(asked) == 6  # 2048-px windows of 5000 x 3000
    expected = data
    for level in levels:
        expected = mode_2x2(expected)
        with rasterio.open(level) as src:
            assert np.array_equal(src.read(1), expected)

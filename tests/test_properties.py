"""Property-based checks of tiling and stitching on small random rasters: every pixel
is written exactly once, on the input grid, and classes are NODATA exactly where the
input is masked."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from distributed import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agriseg.classes import CLASSES, NODATA
from agriseg.io.raster import open_raster
from agriseg.models.registry import resolve
from agriseg.segmentation.execution import dask_client
from agriseg.segmentation.segment import argmax_classes, join_row, segment_blocks
from agriseg.segmentation.tiling import TileGrid


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask_client() as c:
        yield c


@st.composite
def rasters(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A (3, H, W) uint8 image of 1-200 px a side and its validity mask."""
    height = draw(st.integers(1, 200))
    width = draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**16))
    image = np.random.default_rng(seed).integers(1, 256, (3, height, width), dtype="uint8")
    mask = draw(
        st.one_of(
            st.just(np.ones((height, width), bool)),
            st.just(np.zeros((height, width), bool)),
            arrays(bool, (height, width)),
        )
    )
    return image, mask


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raster=rasters(),
    tile_overlap=st.sampled_from([(64, 16), (64, 32), (96, 32)]),
    batch=st.integers(1, 3),
)
def test_stitched_blocks_cover_the_grid_once_and_keep_nodata(client, raster, tile_overlap, batch):
    image, mask = raster
    image = np.where(mask, image, 0).astype("uint8")
    _, height, width = image.shape
    tile, overlap = tile_overlap
    with tempfile.TemporaryDirectory() as tmp:
        path = write_raster(Path(tmp) / "r.tif", image, nodata=0, block=64)
        info = open_raster(path, ("red", "green", "blue"))
        grid = TileGrid(height, width, tile, overlap, tiles_per_chunk=batch)
        classes = np.full((height, width), 254, dtype="uint8")
        written = np.zeros((height, width), dtype="int32")
        for block in segment_blocks(client, info, grid, str(resolve("default")), "cpu"):
            w = block.window
            rows = slice(w.row_off, w.row_off + w.height)
            cols = slice(w.col_off, w.col_off + w.width)
            assert w.row_off >= 0 and w.row_off + w.height <= height
            assert w.col_off >= 0 and w.col_off + w.width <= width
            assert block.classes.shape == (w.height, w.width) == block.confidence.shape
            classes[rows, cols] = block.classes
            written[rows, cols] += 1
            assert ((block.confidence == NODATA) == (block.classes == NODATA)).all()
            assert block.pixels.sum() == (block.classes != NODATA).sum()
    assert (written == 1).all()
    assert ((classes == NODATA) == ~mask).all()
    assert (classes[mask] < len(CLASSES)).all()


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    tile_overlap=st.sampled_from([(32, 0), (32, 2), (64, 16), (64, 32), (96, 32)]),
    seed=st.integers(0, 2**16),
)
def test_join_row_equals_summing_the_tiles_in_float32(n, tile_overlap, seed):
    tile, overlap = tile_overlap
    stride = tile - overlap
    probs = np.random.default_rng(seed).random((n, 4, tile, tile), dtype="float32")
    expected = np.zeros((4, tile, (n - 1) * stride + tile), dtype="float32")
    for k in range(n):
        expected[:, :, k * stride : k * stride + tile] += probs[k]
    joined = join_row(probs, stride)
    assert joined.dtype == np.float16
    np.testing.assert_array_equal(joined, expected.astype("float16"))


@settings(max_examples=30, deadline=None)
@given(
    classes=st.integers(1, 6),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_argmax_classes_is_numpys_argmax_and_max_ties_included(classes, levels, seed):
    # Few distinct levels: many pixels where classes tie, which the first one wins.
    rng = np.random.default_rng(seed)
    probs = (rng.integers(0, levels, (classes, 37, 29)) / levels).astype("float32")
    found, best = argmax_classes(probs)
    assert found.dtype == np.uint8
    np.testing.assert_array_equal(found, np.argmax(probs, axis=0))
    np.testing.assert_array_equal(best, probs.max(axis=0))

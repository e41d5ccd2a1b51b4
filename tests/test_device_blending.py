"""A chunk's tiles normalised, cut, run and blended on the model's device (torch).

On CUDA this keeps the per-pixel work beside the model; on a CPU the same torch code
runs, so these tests hold the device path to the host's numbers: the same float16
sums, bit for bit, whatever the tiles, views, resizing or skipped tiles, and the same
classes and confidence where a chunk settles them itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import field_image, write_raster

from agriseg.io.raster import open_raster
from agriseg.models.inference import Predictor, Settled, get_predictor, normalize
from agriseg.models.registry import find_model
from agriseg.segmentation.segment import (
    argmax_classes,
    chunk_validity,
    cut_tiles,
    infer_chunk,
    join_row,
    padded_extent,
    read_extent,
    stitch_chunk,
)
from agriseg.segmentation.tiling import TileGrid


@pytest.fixture(scope="module")
def torch_predictor() -> tuple[Predictor, str]:
    weights, _ = find_model("default")
    return get_predictor(str(weights), "cpu", 1, "torch"), str(weights)


def host_row(
    predictor: Predictor,
    extent: np.ndarray,
    run: np.ndarray,
    grid: TileGrid,
    model_tile: int | None = None,
    tta: bool = False,
) -> np.ndarray:
    """The chunk's row as the host makes it for the ONNX engine: normalise and cut
    here, run the tiles, put zeros where a tile did not run, join at the stride."""
    x = normalize(extent, "uint8", predictor.meta.normalization)
    probs, _ = predictor.probabilities(
        cut_tiles(x, run, grid), grid.weight_window(), model_tile, tta
    )
    every = np.zeros((len(run), *probs.shape[1:]), dtype=probs.dtype)
    every[run] = probs
    return join_row(every, grid.stride)


@pytest.mark.parametrize(
    ("tile", "overlap", "tiles", "model_tile", "tta"),
    [
        (128, 32, 4, None, False),
        (128, 64, 2, None, False),  # the widest overlap: half a tile
        (96, 32, 3, 128, False),  # resized to the model's tile on the device and back
        (64, 16, 3, None, True),  # the eight views
    ],
)
@pytest.mark.parametrize("skipped", [False, True])
def test_a_row_blended_on_the_device_is_the_hosts_bit_for_bit(
    torch_predictor, tile, overlap, tiles, model_tile, tta, skipped
) -> None:
    predictor, _ = torch_predictor
    grid = TileGrid(1000, 1000, tile, overlap, tiles_per_chunk=tiles)
    width = (tiles - 1) * grid.stride + tile
    rng = np.random.default_rng(tile + overlap)
    extent = rng.integers(0, 256, (3, tile, width)).astype("float32")
    extent[:, : tile // 4, : width // 3] = np.nan  # invalid pixels: the mean after normalising
    run = np.ones(tiles, dtype=bool)
    if skipped:
        run[1::2] = False  # these add nothing, on either side
    # Some rows and columns settled by these tiles alone, with made-up weight sums.
    rows, cols = slice(overlap, tile - overlap), slice(overlap // 2, width - overlap)
    sums = rng.uniform(0.5, 1.5, (rows.stop - rows.start, cols.stop - cols.start))
    settled = Settled(rows, cols, sums.astype("float32"))
    blended = predictor.blended_row(
        extent, run, grid.stride, "uint8", grid.weight_window(), settled, model_tile, tta
    )
    device = blended.sums
    host = host_row(predictor, extent, run, grid, model_tile, tta)
    assert device.dtype == np.float16 and device.shape == host.shape == (4, tile, width)
    np.testing.assert_array_equal(device, host)
    assert blended.seconds > 0
    # The settled classes: the stitch's arg-max of the float16 sums over the weights.
    region = host[:, rows, cols].astype("float32") / settled.weights
    classes, best = argmax_classes(region)
    np.testing.assert_array_equal(blended.classes, classes)
    confidence = np.clip(np.rint(best * 100), 0, 100).astype("uint8")
    np.testing.assert_array_equal(blended.confidence, confidence)
    # The columns no tile that ran reaches stay zero, and only those.
    reached = np.zeros(width, dtype=bool)
    for k in np.flatnonzero(run):
        reached[k * grid.stride : k * grid.stride + tile] = True
    assert reached.all() != skipped
    assert not device[:, :, ~reached].any()
    assert device.sum(axis=(0, 1))[reached].all()


def test_a_run_on_the_torch_engine_blends_its_chunks_on_the_device(
    torch_predictor, tmp_path: Path
) -> None:
    # An odd-sized raster with a nodata corner: edge chunks are padded with mirrored
    # pixels, and tiles without a valid pixel are skipped. The default's geometry
    # (overlap a quarter of the tile), so the chunks above and below both reach a core.
    image = field_image(420, 610, seed=3)
    mask = np.ones((420, 610), dtype=bool)
    mask[:230, :230] = False
    path = write_raster(tmp_path / "f.tif", image, mask=mask)
    predictor, weights = torch_predictor
    info = open_raster(path, predictor.meta.bands)
    grid = TileGrid(info.height, info.width, 256, 64, tiles_per_chunk=2)
    assert predictor.blends_on_device
    parts = {}
    for i in range(grid.chunk_rows):
        for j in range(grid.chunk_cols):
            part = infer_chunk(info, grid, i, j, weights, "cpu", 1, engine="torch")
            parts[i, j] = part
            data = read_extent(info, grid, i, j)
            chunk = chunk_validity(data, grid, i, j)
            assert part.tiles_run == int(chunk.run.sum())
            np.testing.assert_array_equal(part.valid, chunk.valid)
            x = normalize(padded_extent(data, grid, i, j), info.dtype, predictor.meta.normalization)
            probs, _ = predictor.probabilities(cut_tiles(x, chunk.run, grid), grid.weight_window())
            every = np.zeros((len(chunk.run), *probs.shape[1:]), dtype=probs.dtype)
            every[chunk.run] = probs
            np.testing.assert_array_equal(part.acc, join_row(every, grid.stride))
            assert part.settled is not None and part.settled.window == grid.settled(i, j)
    assert parts[0, 0].tiles_run < grid.chunk_tiles(0)  # the nodata corner's tile is left out
    # Stitched with the classes settled on the device, or wholly from the sums: the same.
    unsettled = {key: replace(part, settled=None) for key, part in parts.items()}
    for i in range(grid.chunk_rows):
        for j in range(grid.chunk_cols):
            near = grid.neighbours(i, j)
            block = stitch_chunk(grid, i, j, info, 4, None, *(parts[k] for k in near))
            whole = stitch_chunk(grid, i, j, info, 4, None, *(unsettled[k] for k in near))
            np.testing.assert_array_equal(block.classes, whole.classes)
            np.testing.assert_array_equal(block.confidence, whole.confidence)
            core, settled = grid.core(i, j), grid.settled(i, j)
            assert 0 < settled.height * settled.width < core.height * core.width


def test_only_torch_networks_blend_on_the_device(onnx_cache) -> None:
    weights, _ = find_model("default")
    onnx = get_predictor(str(weights), "cpu", 1, "onnx")
    assert not onnx.blends_on_device
    with pytest.raises(ValueError, match="blends tiles on the host"):
        onnx.blended_row(
            np.zeros((3, 64, 64), "float32"), np.ones(1, bool), 64, "uint8", np.ones((64, 64))
        )


@pytest.mark.gpu
def test_on_cuda_a_row_blended_on_the_gpu_matches_the_hosts_blending() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    weights, _ = find_model("default")
    predictor = get_predictor(str(weights), "cuda", 1, "torch")
    assert predictor.blends_on_device
    grid = TileGrid(4096, 4096, 512, 64, tiles_per_chunk=4)
    width = 3 * grid.stride + 512
    extent = field_image(512, width, seed=5).astype("float32")
    extent[:, :100, :300] = np.nan
    run = np.array([True, False, True, True])
    device = predictor.blended_row(extent, run, grid.stride, "uint8", grid.weight_window()).sums
    host = host_row(predictor, extent, run, grid)
    # The same forward (autocast) on the same tiles: equal but for the GPU's own
    # reordering of sums, far below what changes a class.
    np.testing.assert_allclose(device.astype("float32"), host.astype("float32"), atol=2e-3)

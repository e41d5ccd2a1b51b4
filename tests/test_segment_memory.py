"""Chunks in flight are bounded in bytes, whatever the raster's width.

``segment_blocks`` submits the row after the one being stitched, then what fits in
``LOOKAHEAD_BYTES``; stitched rows are cut down to the rows the next row needs. The
whole-run figures (peak RSS of wide and large runs against a 4096² run) are in
``tests/test_memory.py`` (slow) and docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from distributed import Client

from agriseg.io.raster import open_raster
from agriseg.models.registry import resolve
from agriseg.segmentation import segment
from agriseg.segmentation.execution import dask_client
from agriseg.segmentation.segment import chunk_bytes, segment_blocks
from agriseg.segmentation.tiling import TileGrid


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask_client() as c:
        yield c


def _chunks_in_memory(client: Client) -> tuple[int, int]:
    """Chunk results (full, cut down) held on the cluster now."""

    def count(dask_scheduler) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        states = dask_scheduler.tasks.values()
        held = [ts.key for ts in states if ts.state == "memory"]
        name = [k[0] if isinstance(k, tuple) else str(k) for k in held]
        return (
            sum(n.startswith("infer_chunk") for n in name),
            sum(n.startswith("bottom_rows") for n in name),
        )

    return client.run_on_scheduler(count)  # type: ignore[no-any-return]


def _segment(client: Client, path: Path, grid: TileGrid) -> tuple[np.ndarray, int]:
    info = open_raster(path, ("red", "green", "blue"))
    classes = np.zeros((grid.height, grid.width), dtype="uint8")
    most_full = 0
    for block in segment_blocks(client, info, grid, str(resolve("default")), "cpu"):
        w = block.window
        classes[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = block.classes
        most_full = max(most_full, _chunks_in_memory(client)[0])
    return classes, most_full


def test_a_wide_raster_keeps_about_two_chunk_rows_and_the_same_classes(
    client, tmp_path, monkeypatch
):
    rng = np.random.default_rng(3)
    image = rng.integers(1, 256, (3, 200, 1400), dtype="uint8")
    path = write_raster(tmp_path / "wide.tif", image, block=64)
    grid = TileGrid(200, 1400, 64, 16, tiles_per_chunk=2)
    assert grid.chunk_rows >= 4 and grid.chunk_cols >= 10

    unbounded, most_default = _segment(client, path, grid)  # the budget holds 2 more rows here
    assert chunk_bytes(grid, 0, 3, 4) * grid.chunk_cols * 2 < segment.LOOKAHEAD_BYTES

    monkeypatch.setattr(segment, "LOOKAHEAD_BYTES", 0)
    bounded, most_full = _segment(client, path, grid)
    np.testing.assert_array_equal(bounded, unbounded)
    # Full chunks: at most the row being stitched and the next one (cut-down rows and
    # released ones do not count), never the whole raster.
    assert most_full <= 2 * grid.chunk_cols, (most_full, most_default)

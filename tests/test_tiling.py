import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agriseg.errors import InputError
from agriseg.segmentation.tiling import TileGrid


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 3000),
    tile=st.sampled_from([64, 128, 384, 512]),
    overlap_frac=st.sampled_from([0, 0.125, 0.25, 0.5]),
    per_chunk=st.integers(1, 8),
)
def test_cores_partition_the_raster_and_tiles_cover_them(size, tile, overlap_frac, per_chunk):
    overlap = int(tile * overlap_frac) // 2 * 2
    grid = TileGrid(size, size + 7, tile, overlap, per_chunk)
    covered = np.zeros((grid.height, grid.width), dtype=int)
    for i in range(grid.chunk_rows):
        for j in range(grid.chunk_cols):
            core = grid.core(i, j)
            covered[
                core.row_off : core.row_off + core.height, core.col_off : core.col_off + core.width
            ] += 1
            ext = grid.extent(i, j)
            assert ext.row_off <= core.row_off
            assert ext.col_off <= core.col_off
            # a tile chunk's own tiles span its whole core
            assert ext.row_off + ext.height >= core.row_off + core.height
            assert ext.col_off + ext.width >= core.col_off + core.width
            assert ext.height == tile
    assert (covered == 1).all()


@pytest.mark.parametrize("tile,overlap", [(512, 64), (384, 64), (128, 32), (64, 0)])
def test_blend_weights_sum_to_one_between_tiles(tile, overlap):
    grid = TileGrid(5000, 5000, tile, overlap)
    total = grid.weight_sum(0, 5000, grid.tile_rows)
    # Away from the raster's outer edges the ramps of neighbouring tiles sum to exactly one.
    inner = total[overlap : 5000 - tile]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)
    assert (total > 0).all()


def test_ramp_is_smooth_and_symmetric():
    ramp = TileGrid(1000, 1000, 256, 64).ramp()
    assert ramp[0] > 0 and ramp[0] < 0.01
    np.testing.assert_allclose(ramp, ramp[::-1])
    assert np.abs(np.diff(ramp)).max() < 0.05


def test_tile_origin_does_not_move_with_tile_size():
    # Both grids start tiles on multiples of the model's size divisor.
    for tile in (384, 512):
        grid = TileGrid(2000, 2000, tile, 64)
        assert grid.pad % grid.divisor == 0
        assert all(grid.extent(i, 0).row_off % 32 == 0 for i in range(grid.chunk_rows))


@pytest.mark.parametrize(
    "tile,overlap,message",
    [(500, 64, "multiple of 32"), (512, 300, "half the tile"), (512, 33, "even")],
)
def test_bad_tiling_options_are_explained(tile, overlap, message):
    with pytest.raises(InputError, match=message):
        TileGrid(100, 100, tile, overlap)


@pytest.mark.parametrize(("width", "batch"), [(2048, 4), (5000, 3), (700, 8), (100, 1)])
def test_chunks_share_a_row_evenly_and_their_cores_cover_it_once(width: int, batch: int) -> None:
    grid = TileGrid(height=600, width=width, tile=256, overlap=32, tiles_per_chunk=batch)
    sizes = [grid.chunk_tiles(j) for j in range(grid.chunk_cols)]
    assert sum(sizes) == grid.tile_cols and max(sizes) <= batch
    assert max(sizes) - min(sizes) <= 1
    cover = np.zeros(width, dtype=int)
    for j in range(grid.chunk_cols):
        core = grid.core(0, j)
        cover[core.col_off : core.col_off + core.width] += 1
    assert (cover == 1).all()


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 1500),
    width=st.integers(1, 1500),
    tile=st.sampled_from([64, 128, 256]),
    overlap_frac=st.sampled_from([0, 0.125, 0.25, 0.5]),
    per_chunk=st.integers(1, 4),
)
def test_a_settled_window_is_the_part_of_its_core_no_other_chunk_reaches(
    height, width, tile, overlap_frac, per_chunk
):
    overlap = int(tile * overlap_frac) // 2 * 2
    grid = TileGrid(height, width, tile, overlap, per_chunk)
    reached = np.zeros((grid.height, grid.width), dtype=int)
    for i in range(grid.chunk_rows):
        for j in range(grid.chunk_cols):
            ext = grid.extent(i, j)
            rows = slice(max(0, ext.row_off), max(0, ext.row_off + ext.height))
            cols = slice(max(0, ext.col_off), max(0, ext.col_off + ext.width))
            reached[rows, cols] += 1
    for i in range(grid.chunk_rows):
        for j in range(grid.chunk_cols):
            core, settled = grid.core(i, j), grid.settled(i, j)
            rows = slice(settled.row_off, settled.row_off + settled.height)
            cols = slice(settled.col_off, settled.col_off + settled.width)
            assert core.row_off <= rows.start <= rows.stop <= core.row_off + core.height
            assert core.col_off <= cols.start <= cols.stop <= core.col_off + core.width
            assert (reached[rows, cols] == 1).all()  # its own chunk's tiles only
            # Outside it, the core is reached by another chunk (so it is the whole part).
            inside = np.zeros((core.height, core.width), dtype=bool)
            inside[
                rows.start - core.row_off : rows.stop - core.row_off,
                cols.start - core.col_off : cols.stop - core.col_off,
            ] = True
            shared = reached[
                core.row_off : core.row_off + core.height, core.col_off : core.col_off + core.width
            ]
            assert (shared[~inside] > 1).all()
    if overlap == 0:  # nothing is shared: every core is settled by its own chunk
        assert all(
            grid.settled(i, j) == grid.core(i, j)
            for i in range(grid.chunk_rows)
            for j in range(grid.chunk_cols)
        )

"""Tile and chunk geometry, and the blending weight window.

Tiles of ``tile`` pixels sit on a regular grid with stride ``tile - overlap``;
neighbouring tiles share ``overlap`` pixels, where their class probabilities are
blended with complementary raised-cosine ramps that sum to one. Tile ``k`` starts
at ``k * stride - pad``; ``pad`` is rounded to the model's size divisor so that the
tile grid, and with it the prediction, does not shift with the tile size.

Tiles are grouped into *chunks*: one row of up to ``tiles_per_chunk`` tiles, the
unit of work (one read, one batch). A chunk's *core* is the part of the raster
it is responsible for after stitching: rows ``[i*stride, (i+1)*stride)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from rasterio.windows import Window

from agriseg.errors import InputError


@dataclass(frozen=True)
class TileGrid:
    """Tiles and chunks covering a ``height`` x ``width`` raster."""

    height: int
    width: int
    tile: int
    overlap: int
    tiles_per_chunk: int = 4
    divisor: int = 32

    def __post_init__(self) -> None:
        if self.tile <= 0 or self.tile % self.divisor:
            raise InputError(
                f"--tile-size {self.tile} must be a positive multiple of {self.divisor}"
            )
        if not 0 <= self.overlap <= self.tile // 2 or self.overlap % 2:
            raise InputError(
                f"--overlap {self.overlap} must be an even number from 0 to half the tile "
                f"size ({self.tile // 2})"
            )
        if self.tiles_per_chunk < 1:
            raise InputError(f"batch size {self.tiles_per_chunk} must be at least 1")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @cached_property
    def pad(self) -> int:
        aligned = math.ceil(self.overlap / 2 / self.divisor) * self.divisor
        return aligned if aligned <= self.overlap else self.overlap // 2

    @property
    def tile_rows(self) -> int:
        return max(1, math.ceil(self.height / self.stride))

    @property
    def tile_cols(self) -> int:
        return max(1, math.ceil(self.width / self.stride))

    @property
    def n_tiles(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def chunk_rows(self) -> int:
        return self.tile_rows

    @property
    def chunk_cols(self) -> int:
        return math.ceil(self.tile_cols / self.tiles_per_chunk)

    def first_tile(self, j: int) -> int:
        """Tile column where chunk column ``j`` starts.

        A row's tiles are shared out as evenly as possible (5 tiles in batches of 4
        make chunks of 3 and 2, not 4 and 1), larger chunks first (they are submitted
        first), so concurrent forwards end together.
        """
        return -(-j * self.tile_cols // self.chunk_cols)

    def chunk_tiles(self, j: int) -> int:
        """Number of tiles in chunk column ``j``."""
        return self.first_tile(j + 1) - self.first_tile(j)

    def core(self, i: int, j: int) -> Window:
        """Raster window chunk ``(i, j)`` is responsible for."""
        row0 = i * self.stride
        col0 = self.first_tile(j) * self.stride
        height = min(self.stride, self.height - row0)
        width = min(self.chunk_tiles(j) * self.stride, self.width - col0)
        return Window(col0, row0, width, height)

    def extent(self, i: int, j: int) -> Window:
        """Window covered by chunk ``(i, j)``'s tiles (may reach outside the raster)."""
        row0 = i * self.stride - self.pad
        col0 = self.first_tile(j) * self.stride - self.pad
        width = (self.chunk_tiles(j) - 1) * self.stride + self.tile
        return Window(col0, row0, width, self.tile)

    def neighbours(self, i: int, j: int) -> list[tuple[int, int]]:
        """Chunks whose tiles can reach into chunk ``(i, j)``'s core (itself included)."""
        return [
            (a, b)
            for a in range(max(0, i - 1), min(self.chunk_rows, i + 2))
            for b in range(max(0, j - 1), min(self.chunk_cols, j + 2))
        ]

    def ramp(self) -> np.ndarray:
        """1-D blending weights over one tile (raised-cosine ramps at both ends)."""
        w = np.ones(self.tile, dtype="float32")
        if self.overlap:
            t = (np.arange(self.overlap, dtype="float64") + 0.5) / self.overlap
            rise = np.sin(np.pi / 2 * t) ** 2
            w[: self.overlap] = rise
            w[-self.overlap :] = rise[::-1]
        return w

    def weight_window(self) -> np.ndarray:
        """2-D blending weights over one tile."""
        r = self.ramp()
        return np.outer(r, r)

    def weight_sums(self, window: Window) -> np.ndarray:
        """The blending weights of every tile summed over ``window`` (float32 ``(h, w)``):
        what the summed probabilities there are divided by."""
        rows = self.weight_sum(window.row_off, window.row_off + window.height, self.tile_rows)
        cols = self.weight_sum(window.col_off, window.col_off + window.width, self.tile_cols)
        return np.outer(rows, cols).astype("float32")

    def settled(self, i: int, j: int) -> Window:
        """The part of chunk ``(i, j)``'s core that no other chunk's tiles reach, so that
        its own tiles alone settle its classes (empty when the overlap covers it all).
        Only the chunks next to it reach into a core: the one above and the one before
        reach its top rows and first columns, the ones below and after its last."""
        core = self.core(i, j)
        top, left = core.row_off, core.col_off
        bottom, right = top + core.height, left + core.width
        if i > 0:
            above = self.extent(i - 1, j)
            top = max(top, above.row_off + above.height)
        if i + 1 < self.chunk_rows:
            bottom = min(bottom, self.extent(i + 1, j).row_off)
        if j > 0:
            before = self.extent(i, j - 1)
            left = max(left, before.col_off + before.width)
        if j + 1 < self.chunk_cols:
            right = min(right, self.extent(i, j + 1).col_off)
        if bottom <= top or right <= left:
            return Window(core.col_off, core.row_off, 0, 0)
        return Window(left, top, right - left, bottom - top)

    def weight_sum(self, start: int, stop: int, n_tiles: int) -> np.ndarray:
        """Sum of the 1-D ramps of all ``n_tiles`` tiles over raster coordinates [start, stop)."""
        coords = np.arange(start, stop)
        total = np.zeros(coords.size, dtype="float64")
        ramp = self.ramp()
        first = max(0, (start - self.tile + self.pad) // self.stride)
        last = min(n_tiles - 1, (stop - 1 + self.pad) // self.stride)
        for k in range(first, last + 1):
            local = coords - (k * self.stride - self.pad)
            inside = (local >= 0) & (local < self.tile)
            total[inside] += ramp[local[inside]]
        return total

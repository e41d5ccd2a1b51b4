"""Where a raster certainly has no valid pixel, known from its file's layout alone.

A sparse GeoTIFF (GDAL's ``SPARSE_OK=TRUE``) leaves out the blocks that hold only
nodata: such a block has no offset in the file, and GDAL reads it as the nodata
value, or 0 (an alpha or mask of 0: invalid). Asking for the blocks' offsets costs
a lookup in the file's directory, not a pixel read, so an orthomosaic that is
half nodata tells where its flight area is before anything is decoded.

The answer is conservative: a block is *empty* only when the file proves it (it is
missing from the bands that say which pixels are valid); any other block, and any
file whose layout says nothing (not a GeoTIFF, an internal mask, no mask at all),
counts as possibly valid. Callers must still check the pixels they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

import agriseg.classes
from agriseg.io.grid import Grid
from agriseg.io.raster import open_dataset


@dataclass(frozen=True)
class Coverage:
    """Which of a raster's storage blocks may hold a valid pixel.

    Attributes:
        block_shape: Rows and columns of a block.
        maybe_valid: One boolean per block, ``(block rows, block columns)``: False
            where the block certainly holds no valid pixel.
    """

    block_shape: tuple[int, int]
    maybe_valid: np.ndarray

    def any_valid(self, window: Window) -> bool:
        """Whether ``window`` (inside the raster) may hold a valid pixel."""
        h, w = self.block_shape
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if r1 <= r0 or c1 <= c0:
            return False
        blocks = self.maybe_valid[r0 // h : (r1 - 1) // h + 1, c0 // w : (c1 - 1) // w + 1]
        return bool(blocks.any())

    @property
    def pixels_at_most(self) -> int:
        """An upper bound of the raster's valid pixels: those of its possibly valid blocks."""
        return int(self.maybe_valid.sum()) * self.block_shape[0] * self.block_shape[1]


def coverage_on(path: Path | None, grid: Grid) -> Coverage | None:
    """The coverage of ``path`` (see :func:`read_coverage`) when it lies on ``grid`` (same
    size and geotransform: a run's input under its class raster) and empty areas are
    skipped; else None."""
    if path is None or not agriseg.classes.SKIP_EMPTY:
        return None
    with open_dataset(path) as src:
        if (src.height, src.width, src.transform) != (grid.height, grid.width, grid.transform):
            return None
    return read_coverage(path)


def valid_pixels_at_most(path: Path | str) -> int | None:
    """An upper bound of ``path``'s valid pixels when its layout tells one (see
    :func:`read_coverage`) and empty areas are skipped; else None."""
    if not agriseg.classes.SKIP_EMPTY:
        return None
    coverage = read_coverage(path)
    return None if coverage is None else coverage.pixels_at_most


def read_coverage(path: Path | str) -> Coverage | None:
    """The blocks of ``path`` that may hold valid pixels; None when its layout cannot
    tell (then every block may)."""
    with open_dataset(path) as src:
        if src.driver != "GTiff":
            return None
        flags = set(src.mask_flag_enums[0])
        if MaskFlags.alpha in flags and ColorInterp.alpha in src.colorinterp:
            # Valid where the alpha is not 0; a missing alpha block reads as 0.
            deciding = [list(src.colorinterp).index(ColorInterp.alpha) + 1]
        elif MaskFlags.nodata in flags and MaskFlags.alpha not in flags:
            # Valid where any band is not nodata; a missing block reads as nodata.
            deciding = list(range(1, src.count + 1))
        else:  # all valid, or an internal mask whose blocks rasterio cannot list
            return None
        if len(set(src.block_shapes)) != 1:
            return None
        block_h, block_w = src.block_shapes[0]
        rows, cols = -(-src.height // block_h), -(-src.width // block_w)
        maybe_valid = np.zeros((rows, cols), dtype=bool)
        for band in deciding:
            for i in range(rows):
                for j in range(cols):
                    if not maybe_valid[i, j]:
                        offset = src.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=band)
                        maybe_valid[i, j] = offset is not None
        return Coverage((block_h, block_w), maybe_valid)

"""Overviews of the class and confidence rasters, built only where the run left data.

A cloud-optimised GeoTIFF carries overviews (the raster halved, and halved again,
down to one 512-px block), which GDAL's COG driver computes from every pixel of the
source. An orthomosaic is often a small flight area on a large rectangle of nodata,
and the driver resamples that nodata too: an 8192² class raster holding one 1024²
patch took 0.63 s to convert, most of it computing overviews of nothing.

agriseg builds the overviews itself, in windows of :data:`WINDOW` px, skipping the
windows in which no block the run wrote held a valid pixel (they are nodata at every
level, and are not even read), and hands them to the COG driver with the raster
through a VRT, so the driver only copies. Each level is made from the one below, as
GDAL does:

* classes: the most frequent valid class of each 2 x 2 pixels; on a tie, the one
  that reaches that count first in window order (top left, top right, bottom left,
  bottom right), as GDAL's ``MODE`` decides. A class is never blended into another.
* confidence: the mean of the valid values, rounded half up (GDAL's ``AVERAGE``).

A pixel with no valid pixel under it is nodata. Levels of even edges are GDAL's
exactly (``tests/test_overviews.py`` builds both); where an edge is odd, GDAL spreads
its windows over the level a fraction of a pixel apart, while here the last row or
column of windows is padded with nodata.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from agriseg.classes import NODATA
from agriseg.io.working_copies import working_compression

#: Edge of the windows the overviews are built in (a multiple of every factor below
#: it; larger factors make taller windows).
WINDOW = 2048

#: Makes the next level from a level's pixels (``(H, W)`` uint8, nodata 255).
Reduce = Callable[[np.ndarray], np.ndarray]


def overview_factors(width: int, height: int, block: int) -> list[int]:
    """Halving factors down to one ``block`` (2, 4, ... while a level is larger than
    a block either way), as GDAL's COG driver chooses them."""
    factors: list[int] = []
    factor = 1
    while math.ceil(width / factor) > block or math.ceil(height / factor) > block:
        factor *= 2
        factors.append(factor)
    return factors


def _quarters(level: np.ndarray) -> np.ndarray:
    """The four pixels of every 2 x 2 window ``(4, ceil(H/2), ceil(W/2))``, in window
    order; an odd last row or column is padded with nodata."""
    h, w = level.shape
    if h % 2 or w % 2:
        level = np.pad(level, ((0, h % 2), (0, w % 2)), constant_values=NODATA)
    return np.stack([level[0::2, 0::2], level[0::2, 1::2], level[1::2, 0::2], level[1::2, 1::2]])


def mode_2x2(level: np.ndarray) -> np.ndarray:
    """The next level of a class raster (see the module docstring)."""
    quarters = _quarters(level)
    valid = quarters != NODATA
    # How often each pixel's class occurs up to it, in window order: the class that
    # first reaches the highest count wins.
    seen = np.stack(
        [
            ((quarters[: k + 1] == q) & valid[: k + 1]).sum(axis=0, dtype=np.uint8) * valid[k]
            for k, q in enumerate(quarters)
        ]
    )
    first = (seen == seen.max(axis=0)).argmax(axis=0)
    return np.take_along_axis(quarters, first[None], axis=0)[0]  # nodata where none is valid


def mean_2x2(level: np.ndarray) -> np.ndarray:
    """The next level of a confidence raster (see the module docstring)."""
    quarters = _quarters(level)
    valid = quarters != NODATA
    total = np.where(valid, quarters, 0).sum(axis=0, dtype=np.uint16)
    count = valid.sum(axis=0, dtype=np.uint16)
    out = np.full(count.shape, NODATA, np.uint8)
    some = count > 0
    out[some] = (total[some] + count[some] // 2) // count[some]
    return out


def _windows(width: int, height: int, top: int) -> Iterator[Window]:
    """Windows of the full-resolution raster whose offsets every factor up to ``top``
    divides."""
    edge = max(WINDOW, top)
    for row in range(0, height, edge):
        for col in range(0, width, edge):
            yield Window(col, row, min(edge, width - col), min(edge, height - row))


def build_overviews(
    path: Path, reduce: Reduce, factors: Sequence[int], has_data: Callable[[Window], bool]
) -> list[Path]:
    """Write the overview levels of the single-band raster ``path`` as working GeoTIFFs
    beside it (``<name>.<random>.ovr<factor>.tif``, sparse: windows without data are
    not written) and return their paths, largest first.

    The names are new on every call: GDAL keeps the files a VRT read open in a pool
    after the VRT closes, and a level rewritten under an earlier name could be read
    through a stale handle.

    ``has_data(window)`` says whether the run wrote a valid pixel in a window of
    ``path``; a window without one is skipped unread.
    """
    written: list[Path] = []
    token = secrets.token_hex(4)
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(rasterio.open(path))
        levels = []
        for factor in factors:
            target = path.with_name(f"{path.name}.{token}.ovr{factor}.tif")
            written.append(target)
            profile = {
                "driver": "GTiff",
                "dtype": "uint8",
                "count": 1,
                "width": math.ceil(src.width / factor),
                "height": math.ceil(src.height / factor),
                "crs": src.crs,
                "transform": src.transform * src.transform.scale(factor, factor),
                "nodata": NODATA,
                "tiled": True,
                "blockxsize": 512,
                "blockysize": 512,
                "sparse_ok": True,
                **working_compression(),
            }
            levels.append(stack.enter_context(rasterio.open(target, "w", **profile)))
        for window in _windows(src.width, src.height, factors[-1]):
            if not has_data(window):
                continue
            level = src.read(1, window=window)
            for factor, dst in zip(factors, levels, strict=True):
                level = reduce(level)
                row, col = int(window.row_off) // factor, int(window.col_off) // factor
                dst.write(level, 1, window=Window(col, row, level.shape[1], level.shape[0]))
    return written


def overview_vrt(path: Path, levels: Sequence[Path]) -> Path:
    """A VRT of ``path`` (its colours, tags and nodata) whose overviews are ``levels``
    (named anew on every call, see :func:`build_overviews`)."""
    vrt = path.with_name(f"{path.name}.{secrets.token_hex(4)}.vrt")
    rasterio.shutil.copy(path, vrt, driver="VRT")
    tree = ET.parse(vrt)
    band = tree.getroot().find("VRTRasterBand")
    assert band is not None, f"{vrt}: no band"
    for level in levels:
        overview = ET.SubElement(band, "Overview")
        source = ET.SubElement(overview, "SourceFilename", relativeToVRT="0")
        source.text = str(level.resolve())
        ET.SubElement(overview, "SourceBand").text = "1"
    tree.write(vrt, encoding="unicode")
    return vrt

"""Panes of a strip: the pane grid, each pane's pixels with sieving context, sieving.

The health pass cuts each strip into square panes of ``pane_size`` px, one task
each. A pane's task carries its class ids with a halo of context around them, so
regions smaller than the minimum mapping unit are sieved (merged into their
neighbours) as they would be in the whole raster (see :func:`sieve_halo`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import sieve
from rasterio.windows import Window

from agriseg.classes import NODATA
from agriseg.health.strips import FileStrip, Strip, file_strips
from agriseg.io.raster import READ_ENV


def panes(height: int, width: int, pane_size: int) -> Iterator[list[Window]]:
    """Windows of at most ``pane_size`` px tiling the raster, one list per pane row."""
    for row in range(0, height, pane_size):
        yield strip_panes(row, min(pane_size, height - row), width, pane_size)


def strip_panes(row_off: int, height: int, width: int, pane_size: int) -> list[Window]:
    """The panes of the strip of ``height`` rows from ``row_off``, left to right: windows
    at most ``pane_size`` px wide across the raster's ``width``."""
    return [
        Window(col, row_off, min(pane_size, width - col), height)
        for col in range(0, width, pane_size)
    ]


def sieve_size(min_area_m2: float, pixel_area_m2: float) -> int:
    """Pixels in the smallest region kept for a minimum mapping unit of ``min_area_m2``."""
    if min_area_m2 <= 0 or pixel_area_m2 <= 0:
        return 0
    return math.ceil(min_area_m2 / pixel_area_m2 - 1e-9)


def sieve_halo(size: int, pane_size: int) -> int:
    """Context in pixels each sieved pane is given (see :func:`sieve_strip`): none
    without sieving (``size <= 1``)."""
    return max(0, min(size, pane_size // 2)) if size > 1 else 0


def sieve_strip(strip: Strip, size: int, pane_size: int) -> np.ndarray:
    """The strip's own rows with regions smaller than ``size`` px merged away.

    The strip is cut into panes of ``pane_size`` columns; each pane is sieved
    with a halo of ``min(size, pane_size // 2)`` px of context (rows from the strip's
    context, columns from its neighbours) and only its core kept. Whether a region
    is small is then decided exactly whenever ``size <= pane_size // 2`` (a region
    of fewer than ``size`` px never reaches further than the halo, and a larger one
    crossing the window edge shows at least ``halo`` px of itself); the neighbour a
    small region merges into is chosen from neighbour sizes as seen in the window,
    which can differ from a whole-raster sieve when the neighbours run out of the
    window. Nodata pixels are never changed and never absorb a region; regions
    surrounded only by nodata stay.
    """
    if size <= 1:
        return strip.core
    return np.concatenate([task.sieved() for task in pane_tasks(strip, size, pane_size)], axis=1)


def _sieve_window(data: np.ndarray, size: int) -> np.ndarray:
    valid = data != NODATA
    # GDAL refuses a sieve threshold as large as the whole window.
    if 1 < size < data.size and valid.any():
        return sieve(data, size, mask=valid, connectivity=4)
    return data


def sieve_raster(src_path: Path, dst_path: Path, size: int, pane_size: int = 2048) -> None:
    """Write a copy of a class raster with regions smaller than ``size`` px merged away.

    Panes of ``pane_size`` px are sieved with context around them: see
    :func:`sieve_strip`.

    Args:
        src_path: Class raster (uint8, nodata 255).
        dst_path: Where to write the sieved copy (same profile).
        size: Minimum region size in pixels (4-connected); ``<= 1`` copies unchanged.
        pane_size: Edge of the processing panes in pixels.
    """
    # Imported here: it loads Dask distributed, which the health pass's worker
    # processes (they import this module for run_pane) would wait a second for.
    from agriseg.io.gdal_settings import run_settings

    with (
        run_settings(),
        rasterio.open(src_path) as src,
        rasterio.open(dst_path, "w", **src.profile) as dst,
    ):
        with contextlib.suppress(ValueError):
            dst.write_colormap(1, src.colormap(1))
        dst.update_tags(**src.tags())
        for strip in file_strips(src_path, None, pane_size, sieve_halo(size, pane_size)):
            window = Window(0, strip.row_off, src.width, strip.height)
            dst.write(sieve_strip(strip, size, pane_size), 1, window=window)


@dataclass(frozen=True)
class PaneTask:
    """The pixels one pane of a strip needs: its classes with sieving context around them.

    A unit of the health pass's parallel work (:func:`run_pane`): everything in it is
    plain arrays and numbers, so it travels to a worker process as it is.

    Attributes:
        classes: Class ids of the pane's window grown by the sieving halo (clipped to
            the strip's context rows and the raster's columns).
        top: Context rows above the pane in ``classes``.
        left: Context columns left of the pane in ``classes``.
        window: The pane in the raster.
        confidence: Confidence (0–100, nodata 255) of the pane, or None.
        sieve_px: Regions smaller than this are merged away (``<= 1``: none).
    """

    classes: np.ndarray
    top: int
    left: int
    window: Window
    confidence: np.ndarray | None
    sieve_px: int

    def sieved(self) -> np.ndarray:
        """The pane's class ids, sieved with its context (see :func:`sieve_strip`)."""
        data = _sieve_window(np.ascontiguousarray(self.classes), self.sieve_px)
        h, w = int(self.window.height), int(self.window.width)
        return data[self.top : self.top + h, self.left : self.left + w]

    @classmethod
    def nodata(cls, window: Window, sieve_px: int) -> PaneTask:
        """A pane known to hold no valid pixel (e.g. from the input's layout), unread:
        read-only nodata taking no memory, :attr:`empty` without looking."""
        h, w = int(window.height), int(window.width)
        task = cls(np.broadcast_to(np.uint8(NODATA), (h, w)), 0, 0, window, None, sieve_px)
        task.__dict__["empty"] = True  # what the cached property would find, known already
        return task

    @cached_property
    def empty(self) -> bool:
        """Whether the pane has no valid pixel: sieving changes none of it and it has
        no polygon, so :func:`~agriseg.health.pane_polygons.run_pane` returns at once
        (not worth sending anywhere)."""
        h, w = int(self.window.height), int(self.window.width)
        core = self.classes[self.top : self.top + h, self.left : self.left + w]
        return not (core != NODATA).any()


@dataclass(frozen=True)
class FilePaneTask:
    """A pane of finished class and confidence raster files that the process running it
    reads itself (:meth:`read`): it travels as paths and numbers, not pixels.

    Attributes:
        classes_path: The class raster.
        confidence_path: Its confidence raster, or None.
        window: The pane in the raster.
        halo: Sieving context around the pane (clipped to the raster).
        sieve_px: Regions smaller than this are merged away (``<= 1``: none).
    """

    classes_path: Path
    confidence_path: Path | None
    window: Window
    halo: int
    sieve_px: int

    def read(self) -> PaneTask:
        """The :class:`PaneTask` of this pane: what :func:`pane_tasks` cuts from the
        pane's strip read whole, pixel for pixel."""
        r0, c0 = int(self.window.row_off), int(self.window.col_off)
        r1, c1 = r0 + int(self.window.height), c0 + int(self.window.width)
        with contextlib.ExitStack() as stack:
            stack.enter_context(rasterio.Env(**READ_ENV))
            src = stack.enter_context(rasterio.open(self.classes_path))
            top, left = max(0, r0 - self.halo), max(0, c0 - self.halo)
            bottom, right = min(src.height, r1 + self.halo), min(src.width, c1 + self.halo)
            classes = src.read(1, window=Window(left, top, right - left, bottom - top))
            confidence = None
            if self.confidence_path is not None:
                confidence = stack.enter_context(rasterio.open(self.confidence_path)).read(
                    1, window=self.window
                )
        return PaneTask(classes, r0 - top, c0 - left, self.window, confidence, self.sieve_px)


def file_pane_tasks(strip: FileStrip, sieve_px: int, pane_size: int) -> list[FilePaneTask]:
    """:func:`pane_tasks` of a strip not read yet: panes their processes read."""
    halo = sieve_halo(sieve_px, pane_size)
    return [
        FilePaneTask(strip.classes_path, strip.confidence_path, window, halo, sieve_px)
        for window in strip_panes(strip.row_off, strip.height, strip.width, pane_size)
    ]


def pane_tasks(strip: Strip, sieve_px: int, pane_size: int) -> list[PaneTask]:
    """The strip cut into panes of ``pane_size`` columns, each with its sieving halo
    (an :attr:`~agriseg.health.strips.Strip.empty` strip's are :meth:`PaneTask.nodata`)."""
    width = strip.classes.shape[1]
    windows = strip_panes(strip.row_off, strip.height, width, pane_size)
    if strip.empty:
        return [PaneTask.nodata(window, sieve_px) for window in windows]
    halo = sieve_halo(sieve_px, pane_size)
    rows = slice(
        max(0, strip.above - halo), min(len(strip.classes), strip.above + strip.height + halo)
    )
    tasks = []
    for window in windows:
        col = int(window.col_off)
        c1 = col + int(window.width)
        c0o, c1o = max(0, col - halo), min(width, c1 + halo)
        conf = strip.confidence[:, col:c1] if strip.confidence is not None else None
        tasks.append(
            PaneTask(
                strip.classes[rows, c0o:c1o],
                strip.above - rows.start,
                col - c0o,
                window,
                conf,
                sieve_px,
            )
        )
    return tasks

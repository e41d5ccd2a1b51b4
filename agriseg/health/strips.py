"""Strips of a class raster: full-width runs of rows, from a file or as a run produces them.

The field-health pass (:mod:`agriseg.health.products`) consumes a raster strip by strip, top
to bottom, so it can start while the segmentation is still running:
:class:`StripAssembler` turns the blocks a run writes into strips as soon as every row
a strip needs (its own and its context rows) is known; :func:`file_strips` reads the
same strips from a finished file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from agriseg.classes import NODATA


@dataclass(frozen=True)
class Strip:
    """Rows ``[row_off, row_off + height)`` of a class raster, with context rows around them.

    Attributes:
        row_off: First row of the strip.
        height: Rows in the strip.
        classes: Class ids of rows ``[row_off - above, row_off + height + below)``
            (the context rows, clipped to the raster, are what sieving looks at).
        above: Context rows above the strip in ``classes``.
        confidence: Confidence (0–100, nodata 255) of the strip's own rows, or None.
        empty: Known to hold no valid pixel, context rows included (its arrays are
            then read-only nodata taking no memory); False says nothing.
    """

    row_off: int
    height: int
    classes: np.ndarray
    above: int
    confidence: np.ndarray | None
    empty: bool = False

    @property
    def core(self) -> np.ndarray:
        """The class ids of the strip's own rows."""
        return self.classes[self.above : self.above + self.height]


@dataclass(frozen=True)
class FileStrip:
    """Rows ``[row_off, row_off + height)`` of finished class and confidence raster files,
    not read yet: whoever can open the files (this process, a worker process on this
    machine) reads what it needs of them.

    Attributes:
        classes_path: The class raster.
        confidence_path: Its confidence raster, or None.
        row_off: First row of the strip.
        height: Rows in the strip.
        width: Columns of the raster.
        halo: Context rows wanted above and below (clipped to the raster).
    """

    classes_path: Path
    confidence_path: Path | None
    row_off: int
    height: int
    width: int
    halo: int

    def read(self) -> Strip:
        """The strip's pixels, with its context rows (under the caller's GDAL settings)."""
        with contextlib.ExitStack() as stack:
            classes = stack.enter_context(rasterio.open(self.classes_path))
            top = max(0, self.row_off - self.halo)
            bottom = min(classes.height, self.row_off + self.height + self.halo)
            data = classes.read(1, window=Window(0, top, self.width, bottom - top))
            conf = None
            if self.confidence_path is not None:
                confidence = stack.enter_context(rasterio.open(self.confidence_path))
                conf = confidence.read(1, window=Window(0, self.row_off, self.width, self.height))
        return Strip(self.row_off, self.height, data, self.row_off - top, conf)


def raster_file_strips(
    classes_path: Path,
    confidence_path: Path | None,
    strip_height: int,
    halo: int = 0,
) -> Iterator[FileStrip]:
    """The strips of a class raster file, ``strip_height`` rows each, with ``halo``
    context rows, unread (see :class:`FileStrip`)."""
    with rasterio.open(classes_path) as src:
        height, width = src.height, src.width
    for row in range(0, height, strip_height):
        rows = min(strip_height, height - row)
        yield FileStrip(Path(classes_path), confidence_path, row, rows, width, halo)


def file_strips(
    classes_path: Path,
    confidence_path: Path | None,
    strip_height: int,
    halo: int = 0,
) -> Iterator[Strip]:
    """The strips of a class raster file, ``strip_height`` rows each, with ``halo`` context
    rows, read.

    No ``rasterio.Env`` is held across a ``yield``: a generator abandoned by an error
    is closed later, maybe after the caller's own Env has exited, and leaving an Env
    then raises ``EnvError``. The block cache is the run's (:mod:`agriseg.io.gdal_settings`).
    """
    for strip in raster_file_strips(classes_path, confidence_path, strip_height, halo):
        yield strip.read()


@dataclass
class _Band:
    """Rows ``[start, stop)`` of the strips being assembled; arrays None while no block
    with data has touched them (nodata throughout, held in no memory)."""

    start: int
    stop: int
    classes: np.ndarray | None = None
    confidence: np.ndarray | None = None


def _nodata(rows: int, width: int) -> np.ndarray:
    """Read-only nodata of ``rows`` x ``width``, taking no memory."""
    return np.broadcast_to(np.uint8(NODATA), (rows, width))


class StripAssembler:
    """Collects class and confidence blocks written in any order into ``strip_height``-row strips.

    Rows are held in bands, one per extent of rows that a block first reached; a
    band's arrays exist only once a block with data lands in it, and a strip whose
    rows (context included) lie in bands without data comes out :attr:`Strip.empty`,
    so a survey's empty stretches cost neither memory nor copies. Only the rows not
    yet handed out in a strip (and the context rows the next strip needs) are kept:
    about ``(strip_height + 2 * halo + 2 * block rows) x width`` bytes per raster,
    whatever the raster's height.

    Args:
        height: Rows of the raster.
        width: Columns of the raster.
        strip_height: Rows per strip.
        halo: Context rows above and below each strip.
    """

    def __init__(self, height: int, width: int, strip_height: int, halo: int) -> None:
        self._height = height
        self._width = width
        self._strip_height = strip_height
        self._halo = halo
        self._next_row = 0  # first row of the next strip
        self._bands: list[_Band] = []  # consecutive, from the first row still needed
        self._end = 0  # rows [.., end) have a band
        self._filled = np.zeros(height, dtype="int64")  # columns written, per row
        self._complete = 0  # rows [0, complete) are written across the whole width

    def add(
        self,
        window: Window,
        classes: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> list[Strip]:
        """Take one block (``classes`` and ``confidence`` None: nodata throughout, which
        needs no writing); return the strips it completed (in order)."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if r1 > self._end:
            self._bands.append(_Band(self._end, r1))
            self._end = r1
        if classes is not None and confidence is not None:
            for band in self._bands:
                lo, hi = max(r0, band.start), min(r1, band.stop)
                if lo >= hi:
                    continue
                if band.classes is None or band.confidence is None:
                    band.classes = np.full((band.stop - band.start, self._width), NODATA, "uint8")
                    band.confidence = band.classes.copy()
                rows = slice(lo - band.start, hi - band.start)
                band.classes[rows, c0:c1] = classes[lo - r0 : hi - r0]
                band.confidence[rows, c0:c1] = confidence[lo - r0 : hi - r0]
        self._filled[r0:r1] += c1 - c0
        while self._complete < self._height and self._filled[self._complete] >= self._width:
            self._complete += 1
        return self._ready()

    def _rows(self, top: int, bottom: int, confidence: bool) -> np.ndarray | None:
        """Rows ``[top, bottom)`` of the class (or confidence) buffers, copied; None if
        no block with data reached them."""
        pieces, any_data = [], False
        for band in self._bands:
            lo, hi = max(top, band.start), min(bottom, band.stop)
            if lo < hi:
                held = band.confidence if confidence else band.classes
                any_data |= held is not None
                pieces.append(
                    _nodata(hi - lo, self._width)
                    if held is None
                    else held[lo - band.start : hi - band.start]
                )
        if not any_data:
            return None
        return np.concatenate(pieces)

    def _ready(self) -> list[Strip]:
        strips = []
        while self._next_row < self._height:
            row = self._next_row
            rows = min(self._strip_height, self._height - row)
            bottom = min(self._height, row + rows + self._halo)
            if self._complete < bottom:
                break
            top = max(0, row - self._halo)
            classes = self._rows(top, bottom, confidence=False)
            conf = self._rows(row, row + rows, confidence=True)
            if classes is None:
                strip = Strip(
                    row,
                    rows,
                    _nodata(bottom - top, self._width),
                    row - top,
                    _nodata(rows, self._width),
                    empty=True,
                )
            else:
                if conf is None:
                    conf = _nodata(rows, self._width)
                strip = Strip(row, rows, classes, row - top, conf)
            strips.append(strip)
            self._next_row = row + rows
            # Keep only what later strips need: their context above and beyond.
            keep_from = max(0, self._next_row - self._halo)
            self._bands = [band for band in self._bands if band.stop > keep_from]
        return strips

    @property
    def done(self) -> bool:
        """Whether every strip has been handed out."""
        return self._next_row >= self._height

"""Vegetation indices from the input image: NDVI, NDRE and, for RGB surveys, ExG.

Which indices a survey gets depends on the bands its file names (band descriptions
and colour interpretation, see :func:`agriseg.io.spectral.band_names`):

* ``ndvi = (nir - red) / (nir + red)`` when it has red and near-infrared;
* ``ndre = (nir - red_edge) / (nir + red_edge)`` when it also has red edge;
* ``exg = 2g - r - b`` on chromatic coordinates (``r = R / (R + G + B)``...) for
  surveys with red, green and blue but no near-infrared: excess green, the usual
  RGB vegetation index (-1 to 2; bare soil is near 0, green plants well above).

Indices are ratios of raw pixel values, so any scale (uint8, uint16 reflectance x
10000, float reflectance) gives the same values. Pixels that are invalid in the
image (nodata, masked) or have a zero denominator are NaN and left out of means.
An :class:`IndexReader` reads the needed bands of any window, so means per polygon,
per field and per zone are computed block by block in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from agriseg.health.health_stats import Zoning
from agriseg.health.vectorize import blocks
from agriseg.io.raster import read_window
from agriseg.io.spectral import band_names

#: Indices in the order they appear in outputs, with the band names each needs.
INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "ndvi": ("nir", "red"),
    "ndre": ("nir", "red_edge"),
    "exg": ("red", "green", "blue"),
}


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b != 0, (a - b) / (a + b), np.nan).astype("float32")


def _excess_green(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    total = red + green + blue
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, (2 * green - red - blue) / total, np.nan).astype("float32")


_FORMULAS: dict[str, Callable[..., np.ndarray]] = {
    "ndvi": _normalized_difference,
    "ndre": _normalized_difference,
    "exg": _excess_green,
}


def available_indices(band_names: tuple[str, ...]) -> tuple[str, ...]:
    """The indices a file with bands named ``band_names`` supports (see the module doc)."""
    present = set(band_names)
    if "nir" in present:
        return tuple(i for i in ("ndvi", "ndre") if set(INDEX_BANDS[i]) <= present)
    return ("exg",) if {"red", "green", "blue"} <= present else ()


@dataclass(frozen=True)
class IndexReader:
    """Reads vegetation indices of any window of an image.

    Attributes:
        path: The image.
        names: Indices it yields, in order.
        bands: 1-based file band of each band name the indices need.
    """

    path: Path
    names: tuple[str, ...]
    bands: dict[str, int]

    @classmethod
    def of_file(cls, path: Path | None) -> IndexReader | None:
        """The indices ``path``'s bands support; None when it supports none (or is None)."""
        if path is None:
            return None
        names = band_names(path)
        names_present = available_indices(names)
        if not names_present:
            return None
        needed = {b for i in names_present for b in INDEX_BANDS[i]}
        bands = {name: names.index(name) + 1 for name in needed}
        return cls(Path(path), names_present, bands)

    def read(self, window: Window) -> np.ndarray:
        """``(len(names), h, w)`` float32 indices of ``window``; NaN where undefined."""
        order = sorted(self.bands)
        data = read_window(self.path, tuple(self.bands[n] for n in order), window)
        band = {name: data[k] for k, name in enumerate(order)}
        return np.stack([_FORMULAS[i](*(band[b] for b in INDEX_BANDS[i])) for i in self.names])


def zone_index_means(
    reader: IndexReader,
    height: int,
    width: int,
    zonings: Sequence[Zoning],
    *,
    block_size: int = 2048,
) -> list[np.ndarray]:
    """Mean of each index in each zone of every zoning, in one read of the image: one
    ``(zoning.count, len(reader.names))`` array per zoning, NaN where no pixel of a
    zone has a value."""
    k = len(reader.names)
    sums = [np.zeros((k, z.count)) for z in zonings]
    counts = [np.zeros((k, z.count)) for z in zonings]
    for row in blocks(height, width, block_size):
        for window in row:
            values = reader.read(window)
            finite = np.isfinite(values)
            for zoning, total, count in zip(zonings, sums, counts, strict=True):
                label = zoning.labels(window)
                for i in range(k):
                    keep = finite[i] & (label >= 0)
                    n = zoning.count
                    total[i] += np.bincount(label[keep], weights=values[i][keep], minlength=n)
                    count[i] += np.bincount(label[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [
            np.where(c > 0, s / np.maximum(c, 1), np.nan).T
            for s, c in zip(sums, counts, strict=True)
        ]

"""The pixel grid of a raster: height, width, affine transform and CRS, in one value."""

from __future__ import annotations

from dataclasses import dataclass

import rasterio
from affine import Affine
from pyproj import CRS

from agriseg.io.areas import as_pyproj


@dataclass(frozen=True)
class Grid:
    """Where a raster's pixels lie.

    Attributes:
        height: Rows.
        width: Columns.
        transform: Pixel to ``crs`` affine transform (the identity for a plain image).
        crs: Coordinate reference system; ``None`` for a plain image (a photo without
            georeferencing), whose pixels lie nowhere in particular.
    """

    height: int
    width: int
    transform: Affine
    crs: CRS | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @classmethod
    def of_dataset(cls, src: rasterio.DatasetReader) -> Grid:
        """The grid of an open raster."""
        crs = as_pyproj(src.crs) if src.crs is not None else None
        return cls(src.height, src.width, src.transform, crs)

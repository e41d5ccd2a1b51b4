"""Writing the class and confidence rasters, streamed and atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.windows import Window

from agriseg import __version__
from agriseg.atomic import atomic_output, describe_os_error
from agriseg.classes import NODATA, class_tags, colormap
from agriseg.errors import OutputError
from agriseg.raster import RasterInfo

#: GDAL settings for writing: a bounded block cache, scoped to the writer.
WRITE_ENV = {"GDAL_CACHEMAX": 256, "GDAL_NUM_THREADS": "ALL_CPUS"}


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where ``agriseg run`` writes each product for input ``stem``."""
    return {
        "classes": out_dir / f"{stem}.classes.tif",
        "confidence": out_dir / f"{stem}.confidence.tif",
        "summary": out_dir / f"{stem}.summary.json",
    }


def block_size_for(stride: int) -> int:
    """Output block edge: the tile stride when GeoTIFF allows it, so writes fill whole blocks."""
    return stride if stride % 16 == 0 and 16 <= stride <= 1024 else 256


class ClassRasterWriter:
    """Streams class and confidence blocks into two GeoTIFFs on ``info``'s grid.

    Files appear under their final names only when the writer exits cleanly.
    """

    def __init__(self, info: RasterInfo, paths: dict[str, Path], block: int, model: str) -> None:
        self._info = info
        self._paths = paths
        self._block = block
        self._model = model
        self._stack = contextlib.ExitStack()
        self._classes: rasterio.io.DatasetWriter | None = None
        self._confidence: rasterio.io.DatasetWriter | None = None

    def _profile(self) -> dict:
        info = self._info
        block = self._block if self._block <= max(info.width, info.height) else 256
        return {
            "driver": "GTiff",
            "dtype": "uint8",
            "count": 1,
            "width": info.width,
            "height": info.height,
            "crs": info.crs,
            "transform": info.transform,
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }

    def __enter__(self) -> ClassRasterWriter:
        try:
            self._stack.enter_context(rasterio.Env(**WRITE_ENV))
            tmp_classes = self._stack.enter_context(atomic_output(self._paths["classes"]))
            tmp_conf = self._stack.enter_context(atomic_output(self._paths["confidence"]))
            profile = self._profile()
            self._classes = self._stack.enter_context(rasterio.open(tmp_classes, "w", **profile))
            self._confidence = self._stack.enter_context(rasterio.open(tmp_conf, "w", **profile))
        except BaseException:
            self._stack.close()
            raise
        self._classes.write_colormap(1, colormap())
        self._classes.update_tags(**class_tags(), agriseg_version=__version__, model=self._model)
        self._classes.set_band_description(1, "class")
        self._confidence.update_tags(
            units="percent", description="max class probability", agriseg_version=__version__
        )
        self._confidence.set_band_description(1, "confidence")
        return self

    def write(self, window: Window, classes: np.ndarray, confidence: np.ndarray) -> None:
        assert self._classes is not None and self._confidence is not None
        try:
            self._classes.write(classes, 1, window=window)
            self._confidence.write(confidence, 1, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise OutputError(
                f"{self._paths['classes'].parent}: writing outputs failed ({exc}); "
                "check free space and permissions"
            ) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return bool(self._stack.__exit__(exc_type, exc, tb))
        except rasterio.errors.RasterioIOError as err:
            raise OutputError(
                describe_os_error(self._paths["classes"], OSError(str(err)))
            ) from None

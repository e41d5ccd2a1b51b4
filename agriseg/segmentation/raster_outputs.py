"""Writing the class and confidence rasters, streamed and atomically."""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from agriseg import __version__
from agriseg.classes import NODATA, ClassList
from agriseg.errors import OutputError
from agriseg.io.atomic import OutputTransaction
from agriseg.io.raster import RasterInfo
from agriseg.io.working_copies import working_compression
from agriseg.segmentation.overviews import (
    Reduce,
    build_overviews,
    mean_2x2,
    mode_2x2,
    overview_factors,
    overview_vrt,
)

#: The rasters a :class:`ClassRasterWriter` writes, keys of
#: :func:`agriseg.io.ownership.output_paths`.
KINDS = ("classes", "confidence")

#: GDAL settings for writing: compress on every core. The block cache is the run's
#: (:mod:`agriseg.io.gdal_settings`).
WRITE_ENV = {"GDAL_NUM_THREADS": "ALL_CPUS"}


#: Block edge of the finished rasters (cloud-optimised GeoTIFFs).
COG_BLOCK = 512

#: Deflate level of the finished rasters. Their 16384² COGs took 4.65 s (classes, 31
#: MB) and 5.26 s (confidence, 162 MB) to write at zlib's default level 6, 1.36 s
#: (37 MB) and 2.53 s (168 MB) at level 3, 1.14 s (46 MB) and 1.98 s (172 MB) at level 1.
COG_DEFLATE_LEVEL = 3

#: How each raster's next overview level is made (see :mod:`agriseg.segmentation.overviews`):
#: the most frequent class (a mode never invents a class between two others), the mean
#: confidence.
OVERVIEW_REDUCE: dict[str, Reduce] = {"classes": mode_2x2, "confidence": mean_2x2}


def write_cog(path: Path, reduce: Reduce, has_data: Callable[[Window], bool]) -> None:
    """Rewrite the GeoTIFF ``path`` in place as a cloud-optimised GeoTIFF.

    512-px deflate blocks (level :data:`COG_DEFLATE_LEVEL`) and internal overviews
    halving down to one block, built by
    :func:`~agriseg.segmentation.overviews.build_overviews` with ``reduce`` where
    ``has_data`` says the raster holds valid pixels. GDAL's COG driver then copies the
    raster and its overviews block by block, so nothing is held in memory; it keeps
    the colour table, tags and band descriptions.
    """
    cog = path.with_name(f"{path.name}.cog{path.suffix}")
    temporary = [cog]
    try:
        with rasterio.open(path) as src:
            factors = overview_factors(src.width, src.height, COG_BLOCK)
        source = path
        if factors:
            temporary += build_overviews(path, reduce, factors, has_data)
            source = overview_vrt(path, temporary[1:])
            temporary.append(source)
        rasterio.shutil.copy(
            source,
            cog,
            driver="COG",
            BLOCKSIZE=COG_BLOCK,
            COMPRESS="DEFLATE",
            LEVEL=COG_DEFLATE_LEVEL,
            OVERVIEWS="FORCE_USE_EXISTING" if factors else "NONE",
            BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",
        )
        os.replace(cog, path)
    finally:
        for leftover in temporary:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def category_names_pam(classes: ClassList) -> str:
    """GDAL's sidecar (PAM, ``<raster>.aux.xml``) naming the class raster's values.

    GeoTIFF has no place for band category names, so GDAL keeps them in this sidecar,
    where every GDAL reader finds them (``gdalinfo``'s *Categories*, the labels of
    QGIS's colour-table legend). rasterio cannot set them, and GDAL's COG copy would
    write them beside its temporary: the text is written after that copy.
    """
    names = [""] * (max(c.id for c in classes) + 1)
    for c in classes:
        names[c.id] = c.name
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(categories, "Category").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def class_raster_profile(info: RasterInfo, block: int = 256) -> dict[str, Any]:
    """rasterio profile of a uint8 working class raster on ``info``'s grid (tiled,
    nodata 255, sparse, compressed for speed: see :mod:`agriseg.io.working_copies`).

    ``block`` is the tile edge; rasters smaller than it get 256-px tiles.
    """
    block = block if block <= max(info.width, info.height) else 256
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
        **working_compression(),
        # Blocks without a valid pixel are not written (they read back as nodata).
        "sparse_ok": True,
        "BIGTIFF": "IF_SAFER",
    }


def block_size_for(stride: int) -> int:
    """Output block edge: the tile stride when GeoTIFF allows it, so writes fill whole blocks."""
    return stride if stride % 16 == 0 and 16 <= stride <= 1024 else 256


def _write_failed(path: Path, reason: str) -> OutputError:
    return OutputError(
        f"{path}: writing failed ({reason}); the disk is probably full (no space left) or "
        "the file too large: free space or choose another --out"
    )


def _gdal_reason(exc: rasterio.errors.RasterioError) -> str:
    # rasterio's own message is "Write failed. See previous exception"; GDAL's says why.
    return str(exc.__cause__ or exc).splitlines()[0]


def incomplete_geotiff(path: Path, has_data: Callable[[Window], bool] | None = None) -> str | None:
    """Why a freshly closed GeoTIFF did not fully reach the disk, or ``None`` if it did.

    GDAL flushes cached blocks when a dataset closes and only logs failures there
    (a full disk, ``ulimit -f``), which would leave a truncated file or blocks that
    read back as nodata. Every block must have a non-zero offset inside the file;
    with ``has_data``, only the blocks it says hold data (a sparse working raster
    leaves the others out).
    """
    size = path.stat().st_size
    try:
        with rasterio.open(path) as src:
            rows = -(-src.height // src.block_shapes[0][0])
            cols = -(-src.width // src.block_shapes[0][1])
            for bidx in src.indexes:
                for r in range(rows):
                    for c in range(cols):
                        if has_data is not None and not has_data(src.block_window(bidx, r, c)):
                            continue
                        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx) or 0)
                        length = int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx) or 0)
                        if offset == 0 or offset + length > size:
                            return f"block {r},{c} of band {bidx} is missing"
    except rasterio.errors.RasterioIOError as exc:
        return _gdal_reason(exc)
    return None


class ClassRasterWriter:
    """Streams class and confidence blocks into two GeoTIFFs on ``info``'s grid.

    The class raster carries ``classes``' colour table and ``class_N``/``class_N_role`` tags.
    Blocks are written to tiled GeoTIFFs; :meth:`to_cogs` rewrites them as
    cloud-optimised GeoTIFFs once nothing reads them any more.

    The files are written to temporaries staged in ``transaction``, which puts them
    in place (with the run's other outputs) once everything succeeded.
    """

    def __init__(
        self,
        info: RasterInfo,
        paths: dict[str, Path],
        block: int,
        model: str,
        transaction: OutputTransaction,
        classes: ClassList,
    ) -> None:
        self._info = info
        self._paths = paths
        self._transaction = transaction
        self._tmp: dict[str, Path] = {}
        self._block = block
        self._model = model
        self._class_list = classes
        self._stack = contextlib.ExitStack()
        self._classes: rasterio.io.DatasetWriter | None = None
        self._confidence: rasterio.io.DatasetWriter | None = None
        # The working rasters' blocks that hold a valid pixel so far.
        self._written = np.zeros((0, 0), dtype=bool)
        self._block_edge = block

    @property
    def staged(self) -> dict[str, Path]:
        """The temporary paths the rasters are written to until the transaction commits."""
        return dict(self._tmp)

    def to_cogs(self) -> None:
        """Rewrite the rasters as COGs (:meth:`to_cog`), still staged, and stage the
        class raster's category names (:meth:`stage_category_names`); after the writer
        has closed them."""
        for kind in KINDS:
            self.to_cog(kind)
        self.stage_category_names()

    def to_cog(self, kind: str) -> None:
        """Rewrite the staged raster ``kind`` (one of :data:`KINDS`) as a COG
        (:func:`write_cog`), after the writer has closed it. The two rasters may be
        rewritten on two threads at once."""
        assert self._classes is not None and self._classes.closed, "close the writer first"
        try:
            with rasterio.Env(**WRITE_ENV):
                write_cog(self._tmp[kind], OVERVIEW_REDUCE[kind], self.has_data)
        except rasterio.errors.RasterioError as err:
            raise _write_failed(self._paths[kind], _gdal_reason(err)) from None
        reason = incomplete_geotiff(self._tmp[kind])
        if reason is not None:
            raise _write_failed(self._paths[kind], reason)

    def stage_category_names(self) -> None:
        """Stage the class raster's category names (:func:`category_names_pam`), after
        its COG is written (GDAL's copy would write its own beside its temporary)."""
        aux = self._paths["classes_aux"]
        try:
            self._transaction.stage(aux).write_text(
                category_names_pam(self._class_list), encoding="utf-8"
            )
        except OSError as exc:
            raise _write_failed(aux, str(exc)) from None

    def __enter__(self) -> ClassRasterWriter:
        try:
            self._stack.enter_context(rasterio.Env(**WRITE_ENV))
            self._tmp = {k: self._transaction.stage(self._paths[k]) for k in KINDS}
            profile = class_raster_profile(self._info, self._block)
            self._classes = self._stack.enter_context(
                rasterio.open(self._tmp["classes"], "w", **profile)
            )
            self._confidence = self._stack.enter_context(
                rasterio.open(self._tmp["confidence"], "w", **profile)
            )
            self._block_edge = profile["blockxsize"]
            self._written = np.zeros(
                (
                    -(-self._info.height // self._block_edge),
                    -(-self._info.width // self._block_edge),
                ),
                dtype=bool,
            )
        except rasterio.errors.RasterioIOError as exc:
            self._stack.close()
            raise OutputError(
                f"{self._paths['classes'].parent}: cannot create outputs ({_gdal_reason(exc)}); "
                "choose a writable --out with free space"
            ) from None
        except BaseException:
            self._stack.close()
            raise
        self._classes.write_colormap(1, self._class_list.colormap())
        self._classes.update_tags(
            **self._class_list.tags(), agriseg_version=__version__, model=self._model
        )
        self._classes.set_band_description(1, "class")
        self._confidence.update_tags(
            units="percent", description="max class probability", agriseg_version=__version__
        )
        self._confidence.set_band_description(1, "confidence")
        return self

    def _blocks(self, window: Window) -> tuple[slice, slice]:
        """The working rasters' blocks ``window`` touches."""
        (r0, r1), (c0, c1) = window.toranges()
        edge = self._block_edge
        return slice(int(r0) // edge, -(-int(r1) // edge)), slice(
            int(c0) // edge, -(-int(c1) // edge)
        )

    def has_data(self, window: Window) -> bool:
        """Whether a block with a valid pixel, written so far, touches ``window``."""
        return bool(self._written[self._blocks(window)].any())

    def write(self, window: Window, classes: np.ndarray, confidence: np.ndarray) -> None:
        assert self._classes is not None and self._confidence is not None
        valid = classes != NODATA
        if not valid.any():
            return  # the working rasters are sparse: a block never written reads as nodata
        # GDAL leaves out any block that is all nodata, written or not: note the others.
        rows, cols = self._blocks(window)
        edge, top, left = self._block_edge, int(window.row_off), int(window.col_off)
        for r in range(rows.start, rows.stop):
            for c in range(cols.start, cols.stop):
                part = valid[
                    max(0, r * edge - top) : (r + 1) * edge - top,
                    max(0, c * edge - left) : (c + 1) * edge - left,
                ]
                self._written[r, c] |= bool(part.any())
        try:
            self._classes.write(classes, 1, window=window)
            self._confidence.write(confidence, 1, window=window)
        except rasterio.errors.RasterioIOError as exc:
            raise _write_failed(self._paths["classes"], _gdal_reason(exc)) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            suppressed = bool(self._stack.__exit__(exc_type, exc, tb))
        except rasterio.errors.RasterioIOError as err:
            raise _write_failed(self._paths["classes"], _gdal_reason(err)) from None
        if exc_type is None:
            for kind in KINDS:
                reason = incomplete_geotiff(self._tmp[kind], self.has_data)
                if reason is not None:
                    raise _write_failed(self._paths[kind], reason)
        return suppressed

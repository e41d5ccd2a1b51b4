"""Opening, validating and lazily reading input rasters.

Rasters are never read whole: :func:`read_window` reads one window with its own
dataset handle (rasterio handles are not thread-safe), inside the Dask task that
needs it (see :mod:`agriseg.segmentation.segment`).
Invalid pixels (nodata, alpha, internal masks) are returned as NaN.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS as PyprojCRS
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from agriseg.errors import InputError, RasterReadError
from agriseg.io.areas import as_pyproj
from agriseg.io.grid import Grid
from agriseg.io.spectral import band_names, match_bands

#: Dtypes agriseg can normalise.
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

#: GDAL settings for one read task: each task decodes its own chunk on its own
#: thread (Dask provides the parallelism). The block cache is the run's
#: (:mod:`agriseg.io.gdal_settings`).
READ_ENV = {"GDAL_NUM_THREADS": 1}


@dataclass(frozen=True)
class RasterInfo:
    """A validated input raster: its grid and the bands agriseg will read from it.

    ``bands`` are 1-based indexes in the model's order; ``band_names`` are the
    file's names of those bands (see :mod:`agriseg.io.spectral`).

    The grid's ``crs`` is ``None`` for a plain image (PNG, JPEG, TIFF with neither CRS
    nor geotransform): its ``transform`` is then the identity, a grid of pixels only.
    ``height``, ``width``, ``transform`` and ``crs`` read through to the grid.
    """

    path: Path
    grid: Grid
    count: int
    dtype: str
    block_shape: tuple[int, int]
    bands: tuple[int, ...]
    band_names: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> PyprojCRS | None:
        return self.grid.crs


@contextlib.contextmanager
def pixel_grid_ok(quiet: bool = True) -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning (when ``quiet``): plain images and
    their outputs have no georeferencing by design.

    Python's warning filters are process-wide, and ``catch_warnings`` swaps them as a
    whole, so using it on one thread can undo a filter another thread relies on
    (rasterio's own, inside ``features.sieve``): it is entered only when ``quiet``,
    which georeferenced runs never are.
    """
    if not quiet:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def open_dataset(path: Path | str, plain: bool = True) -> rasterio.DatasetReader:
    """``rasterio.open`` without the NotGeoreferencedWarning: plain images are valid input.

    ``plain=False`` (a raster known to be georeferenced) opens it as it is, without
    touching the process-wide warning filters (see :func:`pixel_grid_ok`).
    """
    # Scoped to the open call, where rasterio raises the warning.
    with pixel_grid_ok(plain):
        return rasterio.open(path)


def georeferenced(src: rasterio.DatasetReader) -> bool:
    """True when ``src`` has a CRS, a geotransform or ground control points."""
    return src.crs is not None or src.transform != Affine.identity() or bool(src.gcps[0])


def _open(path: Path) -> rasterio.DatasetReader:
    if not path.exists():
        raise RasterReadError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(
            f"{path}: is a directory, not a raster; give one file (use `agriseg batch` for folders)"
        )
    if path.stat().st_size == 0:
        raise RasterReadError(f"{path}: file is empty (0 bytes); re-export or re-copy the survey")
    try:
        return open_dataset(path)
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unknown format"
        if _is_tiff(path):
            # A TIFF that GDAL cannot open is almost always cut short (an interrupted
            # copy or download): exporting it again would not help, copying it would.
            raise RasterReadError(
                f"{path}: a TIFF file that cannot be read ({reason}), probably cut off "
                "while it was copied; copy it again from the source (compare the sizes)"
            ) from None
        raise RasterReadError(
            f"{path}: not a readable raster ({reason}); re-export it as GeoTIFF"
        ) from None


#: The first bytes of a TIFF or BigTIFF file, little- and big-endian.
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_SIGNATURES
    except OSError:
        return False


#: What to do with a plain image (no geotransform) for products that need a map: the
#: CRS alone (--assume-crs) cannot place it.
GEOREFERENCE_FIX = (
    "georeference the image first (e.g. gdal_translate -a_srs EPSG:32633 -a_ullr ULX ULY "
    "LRX LRY photo.jpg photo.tif) and run agriseg run on that"
)


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError):  # rasterio raises ValueError for e.g. "EPSG:abc"
        raise InputError(f"--assume-crs {text!r} is not a valid CRS; use e.g. EPSG:32633") from None


def select_bands(
    src: rasterio.DatasetReader, wanted: tuple[str, ...], requested: tuple[int, ...] | None
) -> tuple[int, ...]:
    """1-based band indexes feeding the model's ``wanted`` bands, in order.

    Explicit ``requested`` indexes win; otherwise bands are matched by name
    (descriptions, colour interpretation; so BGR files work), else the first
    non-alpha bands are used (:func:`agriseg.io.spectral.match_bands`).
    """
    path = src.name
    if requested is not None:
        bad = [b for b in requested if not 1 <= b <= src.count]
        if bad:
            raise InputError(
                f"{path}: --bands {','.join(map(str, requested))} names band(s) "
                f"{bad} but the file has bands 1-{src.count}"
            )
        if len(requested) != len(wanted):
            raise InputError(
                f"{path}: --bands gives {len(requested)} band(s) but the model needs "
                f"{len(wanted)} ({', '.join(wanted)})"
            )
        return tuple(requested)
    return match_bands(src, wanted)


def _check_latitudes(path: Path, height: int, width: int, transform: Affine) -> None:
    """Refuse a raster in degrees whose rows reach past a pole: such pixels are nowhere."""
    _, south, _, north = rasterio.transform.array_bounds(height, width, transform)
    if south < -90 - 1e-6 or north > 90 + 1e-6:
        raise InputError(
            f"{path}: its rows reach latitude {south:g}° to {north:g}°, beyond the poles "
            "(±90°); check the geotransform, or the CRS (--assume-crs) if it is not in degrees"
        )


def open_raster(
    path: Path | str,
    wanted_bands: tuple[str, ...],
    bands: tuple[int, ...] | None = None,
    assume_crs: str | None = None,
) -> RasterInfo:
    """Open and validate ``path``; raise an :class:`AgrisegError` saying what to fix.

    A plain image (no CRS, no geotransform, no ground control points) opens with
    ``crs=None`` on its pixel grid, unless ``assume_crs`` asks for georeferencing.
    """
    path = Path(path)
    with _open(path) as src:
        dtype = src.dtypes[0]
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(
                f"{path}: pixel type {dtype} is not supported; convert to uint8, uint16 or "
                "float32 (e.g. gdal_translate -ot UInt16)"
            )
        crs = src.crs
        # Checked even when the file has a CRS: a typo must not pass unnoticed.
        assumed = parse_crs(assume_crs) if assume_crs is not None else None
        plain = not georeferenced(src) and assume_crs is None
        if crs is None and not plain:
            if assumed is None:
                raise InputError(
                    f"{path}: has no coordinate reference system; if you know it, pass "
                    "--assume-crs EPSG:XXXX"
                )
            crs = assumed
        if not plain and not georeferenced(src):
            raise InputError(
                f"{path}: a plain image without a geotransform, which --assume-crs cannot "
                f"place on the ground; drop --assume-crs to segment it on its pixel grid, or "
                f"{GEOREFERENCE_FIX}"
            )
        if not plain and src.transform == Affine.identity() and not src.gcps[0]:
            raise InputError(
                f"{path}: is not georeferenced (no geotransform); georeference it first"
            )
        if not plain and crs.is_geographic:
            _check_latitudes(path, src.height, src.width, src.transform)
        selected = select_bands(src, wanted_bands, bands)
        block_h, block_w = src.block_shapes[selected[0] - 1]
        return RasterInfo(
            path=path,
            grid=Grid(src.height, src.width, src.transform, as_pyproj(crs) if crs else None),
            count=src.count,
            dtype=dtype,
            block_shape=(block_h, block_w),
            bands=selected,
            band_names=tuple(band_names(src)[b - 1] for b in selected),
        )


def read_window(
    path: Path, bands: tuple[int, ...], window: Window, plain: bool = False
) -> np.ndarray:
    """Read ``window`` as float32 ``(bands, h, w)`` with invalid pixels set to NaN;
    ``plain`` for an image without georeferencing (see :func:`open_dataset`)."""
    try:
        with rasterio.Env(**READ_ENV), open_dataset(path, plain) as src:
            data = src.read(list(bands), window=window, out_dtype="float32")
            valid = src.dataset_mask(window=window)
    except RasterioError as exc:
        # rasterio's message is "Read failed. See previous exception"; GDAL's says where.
        reason = str(exc.__cause__ or exc).splitlines()[0]
    else:
        data[:, valid == 0] = np.nan
        return data
    # Raised outside the handler: this runs on a Dask worker, which ships the error
    # back pickled with its context, and GDAL's chained errors do not unpickle
    # (the caller would get a bare ``Exception`` instead of a RasterReadError).
    raise RasterReadError(
        f"{path}: read failed at row {window.row_off}, column {window.col_off} ({reason}); "
        "the file is corrupt or truncated, re-export or re-copy it"
    )

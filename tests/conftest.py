"""Shared test helpers: small real GeoTIFFs written into tmp_path."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

UTM = "EPSG:32633"
UTM_TRANSFORM = Affine(0.02, 0.0, 500000.0, 0.0, -0.02, 5300000.0)


def field_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (3, H, W) uint8 image with rows of green plants on brown soil."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rows = (np.sin((xx * 0.9 + yy * 0.3) / 6.0) > 0.55) & (rng.random((height, width)) > 0.15)
    img = np.empty((3, height, width), dtype="float32")
    img[0] = np.where(rows, 60, 140)
    img[1] = np.where(rows, 150, 100)
    img[2] = np.where(rows, 50, 60)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype("uint8")


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM,
    transform: Affine = UTM_TRANSFORM,
    nodata: float | None = None,
    colorinterp: tuple[ColorInterp, ...] | None = None,
    mask: np.ndarray | None = None,
    block: int = 128,
) -> Path:
    """Write ``data`` (bands, H, W) as a tiled GeoTIFF; ``mask`` becomes an internal mask."""
    count, height, width = data.shape
    tiled = height >= block and width >= block
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype("uint8"))
    return path


def read_classes(out_dir: Path, stem: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(out_dir / f"{stem}.classes.tif") as src:
        return src.read(1), {
            "crs": src.crs,
            "transform": src.transform,
            "shape": (src.height, src.width),
            "tags": src.tags(),
            "nodata": src.nodata,
        }


#: ``application_id`` and ``user_version`` of the GeoPackages agriseg writes (1.2).
GEOPACKAGE_1_2 = ("GPKG", 10200)


def geopackage_version(path: Path) -> tuple[str, int]:
    """A GeoPackage's ``application_id`` (as its four letters) and ``user_version``."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        (user_version,) = db.execute("PRAGMA user_version").fetchone()
    return application_id.to_bytes(4, "big").decode("ascii"), user_version


@pytest.fixture
def run_cli():
    """Run ``agriseg ARGS`` in-process and return its exit code."""
    from agriseg_cli.main import main

    def run(*args: str | Path) -> int:
        return main([str(a) for a in args])

    return run


@pytest.fixture
def one_torch_thread():
    """Training tests on one torch thread: small models train faster than they sync."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory):
    """ONNX exports made by ``--engine onnx`` go to a temporary cache, not ~/.cache."""
    import os

    from agriseg.models.onnx_export import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old

"""The GDAL settings agriseg scopes with ``rasterio.Env`` do what their comments say."""

from __future__ import annotations

import pytest
import rasterio
from rasterio.env import get_gdal_config

from agriseg import outputs, raster, strips


@pytest.mark.parametrize(
    "env",
    [raster.READ_ENV, outputs.WRITE_ENV, strips.GDAL_ENV],
    ids=["read (input and preview)", "write", "class-strips"],
)
def test_block_caches_are_megabytes_not_bytes(env: dict) -> None:
    # rasterio passes an int GDAL_CACHEMAX to GDAL as bytes: a bare 64 is a 64-byte cache.
    before = get_gdal_config("GDAL_CACHEMAX")
    with rasterio.Env(**env):
        cache = int(get_gdal_config("GDAL_CACHEMAX"))
    assert 16 * 2**20 <= cache <= 512 * 2**20
    assert get_gdal_config("GDAL_CACHEMAX") == before

"""GDAL settings: one bounded block cache per run, set once, in every process, and put back."""

from __future__ import annotations

import pytest
import rasterio
from rasterio.env import get_gdal_config

from agriseg.io import gdal_settings, raster
from agriseg.segmentation import raster_outputs
from agriseg.segmentation.execution import dask_client


def test_the_run_cache_is_megabytes_not_bytes_and_is_put_back() -> None:
    # rasterio passes an int GDAL_CACHEMAX to GDAL as bytes: a bare 64 is a 64-byte cache.
    before = get_gdal_config("GDAL_CACHEMAX")
    with gdal_settings.run_settings():
        cache = int(get_gdal_config("GDAL_CACHEMAX"))
    assert 16 * 2**20 <= cache <= 512 * 2**20
    assert get_gdal_config("GDAL_CACHEMAX") == before


@pytest.mark.parametrize("env", [raster.READ_ENV, raster_outputs.WRITE_ENV], ids=["read", "write"])
def test_operations_leave_the_process_wide_cache_alone(env: dict) -> None:
    # Set by several threads at once, the process-wide cache size raced: only a run sets it.
    assert "GDAL_CACHEMAX" not in env
    with gdal_settings.run_settings():
        inside = get_gdal_config("GDAL_CACHEMAX")
        with rasterio.Env(**env):
            assert get_gdal_config("GDAL_CACHEMAX") == inside
        assert get_gdal_config("GDAL_CACHEMAX") == inside


def _cache() -> int:
    return int(get_gdal_config("GDAL_CACHEMAX"))


def test_worker_processes_get_the_run_cache_and_then_their_own_back() -> None:
    with dask_client(workers=1) as client:
        before = set(client.run(_cache).values())
        with gdal_settings.on_workers(client):
            assert set(client.run(_cache).values()) == {gdal_settings.CACHE_BYTES}
        assert set(client.run(_cache).values()) == before

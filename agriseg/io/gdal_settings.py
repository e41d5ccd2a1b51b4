"""GDAL settings of a run: one bounded block cache, set once, in every process.

GDAL's block-cache size is process-wide. When the read tasks, the raster writers
and the health pass each set it in their own ``rasterio.Env`` on their own threads,
they raced: leaving one Env put back the size another thread still relied on. A
run therefore sets it once, around everything it does (:func:`run_settings`), and
on each worker process of a Dask cluster for the run's duration
(:func:`on_workers`); the operations' own Envs carry per-thread options only
(``GDAL_NUM_THREADS``). Both put the previous values back afterwards, so nothing
outlives the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import rasterio
from distributed import Client
from rasterio.env import get_gdal_config, set_gdal_config

#: GDAL's block cache for a run, in bytes: rasterio hands an int GDAL_CACHEMAX to
#: GDALSetCacheMax64 (GDAL's own string option reads small numbers as MB: a bare 64
#: here once meant a 64-byte cache). Bounded, so memory does not grow with the raster
#: (GDAL's default is 5 % of RAM: +430 MB for an 8192² preview read).
CACHE_BYTES = 64 * 2**20

#: The settings :func:`run_settings` applies.
RUN_ENV: dict[str, Any] = {"GDAL_CACHEMAX": CACHE_BYTES}


@contextlib.contextmanager
def run_settings() -> Iterator[None]:
    """Apply :data:`RUN_ENV` to this process for the duration of a run."""
    with rasterio.Env(**RUN_ENV):
        yield


def _swap_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Set ``settings`` in this (worker) process; return the values they replaced."""
    previous = {key: get_gdal_config(key) for key in settings}
    for key, value in settings.items():
        set_gdal_config(key, value)
    return previous


@contextlib.contextmanager
def on_workers(client: Client) -> Iterator[None]:
    """Apply :data:`RUN_ENV` on every worker process of ``client``'s cluster for the
    duration of a run (an in-process cluster shares :func:`run_settings` instead)."""
    if _in_process(client):
        yield
        return
    previous = client.run(_swap_settings, RUN_ENV)
    try:
        yield
    finally:
        for worker, values in previous.items():
            restore = {k: v for k, v in values.items() if v is not None}
            if restore:
                with contextlib.suppress(Exception):  # a worker may have gone
                    client.run(_swap_settings, restore, workers=[worker])


def _in_process(client: Client) -> bool:
    cluster = getattr(client, "cluster", None)
    return cluster is not None and not getattr(cluster, "processes", True)

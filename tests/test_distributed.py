"""The same job on Dask worker processes: identical outputs, one model load per worker."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from conftest import field_image, read_classes, write_raster
from distributed import Client, LocalCluster

from agriseg.models.inference import model_loads

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32", "--no-preview")


def read_confidence(out, stem):
    with rasterio.open(out / f"{stem}.confidence.tif") as src:
        return src.read(1)


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "field.tif"
    return write_raster(path, field_image(300, 420, seed=3))


@pytest.fixture(scope="module")
def threaded(raster, tmp_path_factory):
    from agriseg_cli.main import main

    out = tmp_path_factory.mktemp("threaded")
    assert main(["run", str(raster), "--out", str(out), *FAST, "--batch-size", "2"]) == 0
    return out


def test_two_local_worker_processes_give_identical_rasters(raster, threaded, tmp_path, run_cli):
    assert (
        run_cli("run", raster, "--out", tmp_path, *FAST, "--batch-size", "2", "--workers", 2) == 0
    )
    expected, _ = read_classes(threaded, raster.stem)
    got, _ = read_classes(tmp_path, raster.stem)
    assert np.array_equal(got, expected)
    assert np.array_equal(
        read_confidence(tmp_path, raster.stem), read_confidence(threaded, raster.stem)
    )
    # The health pass's blocks ran on the cluster's workers: the same products.
    for name in (f"{raster.stem}.health.geojson", f"{raster.stem}.health.qml"):
        assert (tmp_path / name).read_bytes() == (threaded / name).read_bytes()


def test_existing_cluster_gives_identical_rasters_and_loads_the_model_once_per_worker(
    raster, threaded, tmp_path, run_cli
):
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        args = ("run", raster, "--out", tmp_path, *FAST, "--batch-size", "2")
        assert run_cli(*args, "--scheduler", cluster.scheduler_address) == 0
        loads = client.run(model_loads)
    expected, _ = read_classes(threaded, raster.stem)
    got, _ = read_classes(tmp_path, raster.stem)
    assert np.array_equal(got, expected)
    # 4 rows x 3 columns = 12 chunk tasks ran, yet each worker built the model at most once.
    assert sorted(loads.values())[-1] == 1
    assert all(n <= 1 for n in loads.values())

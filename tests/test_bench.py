"""`agriseg bench`: figures of a run against the model alone on the same tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from agriseg.bench import BenchConfig, bench, gpu_busy_share, write_bench_raster
from agriseg.config import RunConfig


def test_bench_raster_is_a_tiled_georeferenced_rgb_geotiff(tmp_path):
    path = write_bench_raster(tmp_path / "b.tif", 600, seed=1)
    with rasterio.open(path) as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (3, 600, 600, "uint8")
        assert src.crs.to_epsg() == 32633
        assert src.block_shapes[0] == (256, 256)
        data = src.read()
    assert data.std() > 5  # textured, not flat


def test_bench_prints_the_figures_as_one_json_line_last(tmp_path, run_cli, capsys):
    args = ("--size", 256, "--tile-size", 128, "--overlap", 32, "--device", "cpu")
    assert run_cli("bench", *args, "--no-preview", "--work-dir", tmp_path) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["pixels"] == 256 * 256
    assert figures["tiles"] == 9
    assert figures["device"] == "cpu"
    # Both times are printed rounded to 1 ms, and the model alone on 9 small tiles
    # takes only tens of ms: allow the ratio the error that rounding gives.
    end, model = figures["end_to_end_s"], figures["model_only_s"]
    rounding = (end / model) * (0.0005 / model + 0.0005 / end) + 0.001
    assert figures["ratio"] == pytest.approx(end / model, abs=rounding)
    assert figures["model_only_s"] > 0
    assert figures["peak_rss_mb"] > 100
    assert figures["peak_gpu_mb"] is None and figures["peak_gpu_reserved_mb"] is None
    assert figures["gpu_busy_share"] is None
    assert {"read", "load", "infer", "stitch", "write", "total"} <= set(figures["stages_s"])
    # CPU seconds outside the model: the run's less the model-only pass's, per Mpx.
    assert figures["cpu_s"] > figures["model_cpu_s"] > 0
    outside = (figures["cpu_s"] - figures["model_cpu_s"]) / (256 * 256 / 1e6)
    assert figures["cpu_s_per_mpx_outside_model"] == pytest.approx(outside, abs=0.05)
    assert any("CPU-s per Mpx" in line for line in lines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_on_cuda_matches_the_cpu_classes_closely(tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        run = RunConfig(device=device, tile_size=256, overlap=32, batch_size=4)
        figures = bench(BenchConfig(size=512, run=run), tmp_path / device)
        assert figures["device"].startswith(device)
        if device == "cuda":  # the run's own peak: the model's weights and a batch, at least
            assert 0 < figures["peak_gpu_mb"] <= figures["peak_gpu_reserved_mb"]
            assert 0 < figures["gpu_busy_share"] <= 1
        with rasterio.open(tmp_path / device / "outputs" / "bench-512.classes.tif") as src:
            runs[device] = src.read(1)
    # bf16/fp16 autocast on the GPU: nearly, not bit-, identical to fp32 on the CPU.
    assert np.mean(runs["cpu"] == runs["cuda"]) > 0.97


def test_gpu_busy_share_is_the_forwards_share_of_a_cuda_run():
    assert gpu_busy_share("cuda", 3.0, 12.0) == 0.25
    assert gpu_busy_share("cuda:1", 13.0, 12.0) == 1.0  # timer rounding: never above all
    assert gpu_busy_share("cpu", 3.0, 12.0) is None  # forwards side by side on the cores

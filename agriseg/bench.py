"""Benchmarking a run: end-to-end time against the model alone on the same tiles.

:func:`bench` runs the full pipeline on a raster (generated if none is given) in a
fresh process, so that its peak resident memory is its own, then times the model
alone on exactly the tiles of that run, with the same batches, precision, thread
count and device, but without reading, stitching or writing. The ratio of the two
is the pipeline's overhead: 1.0 means the model is the only cost. The CPU seconds
per megapixel spent outside the model (the run's CPU time less the model-only pass's)
say what reading, stitching, writing and the health pass cost the machine, whatever
the wall clock hid behind the model.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.io.raster import open_raster
from agriseg.models.inference import (
    DEFAULT_FORWARD_THREADS,
    default_threads,
    get_predictor,
    model_file,
    resize_tiles,
    resolve_device_name,
    resolve_engine,
)
from agriseg.models.registry import find_model
from agriseg.run import segment_raster
from agriseg.segmentation.numpy_pages import numpy_small_pages
from agriseg.segmentation.scale import plan_tiles
from agriseg.segmentation.segment import chunk_batch, read_extent

T = TypeVar("T")

#: Edge of the survey drawn once and repeated to fill larger benchmark rasters.
SURVEY_EDGE = 1024

#: Model-only passes over the tiles; the fastest counts.
MODEL_REPEATS = 2

#: Batches prepared, then timed through the model together, in the model-only pass.
MODEL_GROUP = 16

#: Rows written at a time when filling a benchmark raster.
WRITE_ROWS = 512


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Attributes:
        size: edge in pixels of the generated square raster (ignored with ``input``).
        input: an existing raster to benchmark on instead.
        run: the run options (model, tiling, batch size, device, cluster).
        seed: seed of the generated survey.
    """

    size: int = 2048
    input: Path | None = None
    run: RunConfig = field(default_factory=lambda: RunConfig(device="cpu"))
    seed: int = 0


def _survey(edge: int, seed: int) -> np.ndarray:
    """A ``(3, edge, edge)`` uint8 drone survey to repeat across the raster."""
    try:
        from agriseg.learning.synthetic import draw_params, generate_survey
    except ImportError:  # the generator is optional; texture will do for timing
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:edge, 0:edge].astype("float32")
        rows = 0.5 + 0.5 * np.sin(xx / 9.0 + np.sin(yy / 57.0))
        base = rng.normal(0, 18, (3, edge, edge)).astype("float32")
        colour = np.array([110, 140, 80], "float32")[:, None, None]
        return np.clip(colour * (0.6 + 0.6 * rows) + base, 0, 255).astype("uint8")
    return generate_survey(draw_params(seed, edge, edge), seed).image[:3]


def write_bench_raster(path: Path, size: int, seed: int = 0, *, height: int | None = None) -> Path:
    """Write a ``size`` x ``size`` RGB GeoTIFF for benchmarking, a strip at a time
    (``size`` wide and ``height`` high when ``height`` is given).

    A survey of at most :data:`SURVEY_EDGE` pixels is drawn once and mirrored
    across the raster, so memory stays small whatever ``size`` is.
    """
    height = size if height is None else height
    if min(size, height) < 32:
        raise InputError(f"--size {size} is too small; use at least 32 pixels")
    survey = _survey(min(max(size, height), SURVEY_EDGE), seed)
    edge = survey.shape[1]
    # Mirrored repeats (0..e-1, e-1..0, ...) avoid seams between copies.
    mirror = np.concatenate([np.arange(edge), np.arange(edge)[::-1]])
    cols = mirror[np.arange(size) % (2 * edge)]
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS.from_epsg(32633),
        "transform": from_origin(500_000, 5_000_000, 0.02, 0.02),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, WRITE_ROWS):
            n = min(WRITE_ROWS, height - row)
            rows = mirror[np.arange(row, row + n) % (2 * edge)]
            dst.write(survey[:, rows][:, :, cols], window=Window(0, row, size, n))
    return path


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and its child processes that ended."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class ModelPass:
    """The model alone on a run's tiles: wall-clock and CPU seconds of the fastest pass."""

    wall_s: float
    cpu_s: float


def _model_only_pass(input_path: Path, config: RunConfig, threads: int, repeats: int) -> ModelPass:
    weights, meta = find_model(config.model)
    info = open_raster(input_path, meta.bands, config.bands, config.assume_crs)
    plan = plan_tiles(info, meta, config)
    grid = plan.grid
    device = resolve_device_name(config.device)
    engine = resolve_engine(config.engine, device, weights)
    weights = model_file(weights, engine, plan.model_tile, config.precision)
    predictor = get_predictor(str(weights), device, threads, engine)
    # Resampled, the model sees model-size tiles, resized here, before the clock
    # starts: resizing and weighting at the input's size belong to the run.
    weight = grid.weight_window() if plan.resize_to is None else None
    chunks = [(i, j) for i in range(grid.chunk_rows) for j in range(grid.chunk_cols)]
    totals = [0.0] * max(1, repeats)
    cpu = [0.0] * len(totals)
    with ThreadPoolExecutor(predictor.streams) as pool:
        for start in range(0, len(chunks), MODEL_GROUP):
            group = []
            for i, j in chunks[start : start + MODEL_GROUP]:
                data = read_extent(info, grid, i, j)
                tiles = chunk_batch(data, grid, i, j, info.dtype, meta.normalization).tiles
                if not len(tiles):  # no valid pixel: the run skips it too
                    continue
                if plan.resize_to is not None:
                    tiles = resize_tiles(tiles, plan.resize_to)
                group.append(tiles)
            for k in range(len(totals)):
                began, began_cpu = time.perf_counter(), cpu_seconds()
                list(
                    pool.map(
                        lambda tiles: predictor.probabilities(
                            tiles, weight, None, config.tta, config.refine
                        ),
                        group,
                    )
                )
                totals[k] += time.perf_counter() - began
                cpu[k] += cpu_seconds() - began_cpu
    return ModelPass(min(totals), min(cpu))


def model_only_seconds(
    input_path: Path, config: RunConfig, repeats: int = MODEL_REPEATS
) -> dict[str, ModelPass]:
    """Seconds the model alone takes on the run's tiles: same batches, precision and device.

    Tiles are read and cut (and, when the run resamples, resized to the model's tile
    size) outside the timed region; only the forward passes (with the softmax, and
    the blending weights unless resampled, as in a run) are timed, in groups of
    :data:`MODEL_GROUP` batches fed to the predictor's forward streams as a run feeds
    them. On CPU it is timed twice: with the run's threads per forward (several
    forwards at once) and with one forward at a time over all cores; each the
    fastest of ``repeats`` passes. The ratio uses the faster, so it is, if anything,
    pessimistic.

    Returns:
        Seconds per setup: ``run`` (the run's) and, on CPU, ``all_cores``; each with
        the CPU seconds of its fastest pass.
    """
    threads = config.threads or DEFAULT_FORWARD_THREADS
    seconds = {"run": _model_only_pass(input_path, config, threads, repeats)}
    if resolve_device_name(config.device) == "cpu" and default_threads() != threads:
        seconds["all_cores"] = _model_only_pass(input_path, config, default_threads(), repeats)
    return seconds


def peak_gpu_mb(device: str) -> dict[str, float | None]:
    """Peak GPU memory of this process so far, in MiB: what torch's tensors took
    (``allocated``) and what its caching allocator held (``reserved``, about what
    ``nvidia-smi`` shows, less the CUDA context); None off CUDA."""
    if not resolve_device_name(device).startswith("cuda"):
        return {"allocated": None, "reserved": None}
    import torch

    torch_device = torch.device(resolve_device_name(device))
    return {
        "allocated": round(torch.cuda.max_memory_allocated(torch_device) / 2**20, 1),
        "reserved": round(torch.cuda.max_memory_reserved(torch_device) / 2**20, 1),
    }


def gpu_busy_share(device: str, forward_s: float, end_to_end_s: float) -> float | None:
    """The share of a CUDA run during which the GPU held a forward: the forwards'
    seconds (one at a time on a GPU, copies to and from it included, see
    :class:`~agriseg.models.inference.TorchForward`) over the run's; None off CUDA,
    where forwards run side by side on the cores."""
    if not device.startswith("cuda") or end_to_end_s <= 0:
        return None
    return round(min(1.0, forward_s / end_to_end_s), 3)


def measure(input_path: Path, out_dir: Path, config: RunConfig) -> dict[str, Any]:
    """Run the pipeline, then the model alone, in this process; return the figures.

    Peak memory (RAM and GPU) is read before the model-only pass, so it is the run's own.
    """
    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = segment_raster(input_path, out_dir, config)
    end_to_end = time.perf_counter() - start
    run_cpu = cpu_seconds() - start_cpu
    summary = result.summary
    gpu_mb = peak_gpu_mb(config.device)
    # A run's forwards happen on Dask worker threads, and OpenMP teams started from
    # the main thread behave differently (with the default active wait policy we
    # measured main-thread forwards up to 2x slower on a busy machine): time the
    # model alone on a worker thread too, and on the pages a run's arrays get
    # (numpy_small_pages).
    with numpy_small_pages(), ThreadPoolExecutor(max_workers=1) as pool:
        passes = pool.submit(model_only_seconds, input_path, config).result()
    model_setups = {name: p.wall_s for name, p in passes.items()}
    device = summary["parameters"]["device"]
    model_s = min(model_setups.values())
    pixels = summary["input"]["width"] * summary["input"]["height"]
    # The run's own setup: its forwards cost what this pass's did.
    outside_cpu = max(0.0, run_cpu - passes["run"].cpu_s)
    return {
        "pixels": pixels,
        "tiles": summary["tiles"],
        "end_to_end_s": round(end_to_end, 3),
        "model_only_s": round(model_s, 3),
        "model_only_setups_s": {k: round(v, 3) for k, v in model_setups.items()},
        "ratio": round(end_to_end / model_s, 3) if model_s else None,
        "mpx_per_s": round(pixels / 1e6 / end_to_end, 3),
        "cpu_s": round(run_cpu, 3),
        "model_cpu_s": round(passes["run"].cpu_s, 3),
        "cpu_s_per_mpx_outside_model": round(outside_cpu / (pixels / 1e6), 3),
        "peak_rss_mb": summary["peak_rss_mb"],
        "peak_gpu_mb": gpu_mb["allocated"],
        "peak_gpu_reserved_mb": gpu_mb["reserved"],
        "gpu_busy_share": gpu_busy_share(device, summary["timings_s"]["infer"], end_to_end),
        "device": summary["parameters"]["device"],
        "engine": summary["parameters"]["engine"],
        "precision": summary["parameters"]["precision"],
        "stages_s": summary["timings_s"],
        "model": summary["model"]["name"],
        "tile_size": summary["parameters"]["tile_size"],
        "batch_size": config.batch_size,
        "threads": config.threads or DEFAULT_FORWARD_THREADS,
        "workers": config.workers,
        "scheduler": config.scheduler,
    }


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a fresh (spawned) process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def run_summary(input_path: Path, out_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The summary of a plain run (for :func:`in_fresh_process`: peak memory of a run)."""
    return segment_raster(input_path, out_dir, config).summary


def bench(config: BenchConfig, work_dir: Path | None = None) -> dict[str, Any]:
    """Benchmark one configuration; returns the figures :func:`measure` gives, and more.

    Generated rasters and outputs go to ``work_dir`` (a temporary folder by default).
    """
    with tempfile.TemporaryDirectory(prefix="agriseg-bench-") as tmp:
        folder = Path(work_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if config.input is None:
            input_path = write_bench_raster(
                folder / f"bench-{config.size}.tif", config.size, config.seed
            )
        else:
            input_path = config.input
        run = replace(config.run, threads=config.run.threads or DEFAULT_FORWARD_THREADS)
        figures = in_fresh_process(measure, input_path, folder / "outputs", run)
    figures["input"] = str(config.input) if config.input else f"generated {config.size}^2"
    figures["machine"] = f"{platform.node()} ({platform.machine()}, {default_threads()} CPUs)"
    return figures

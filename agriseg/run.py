"""``agriseg run`` as one function: raster in, class raster, reports out.

A plain image (PNG, JPEG, TIFF without CRS or geotransform) runs in *pixel mode*:
class and confidence rasters on the image's pixel grid without a CRS, a summary
with pixel counts (areas only from ``RunConfig.gsd_m``), and no field-health
polygons, which need a CRS (the summary has no ``health`` entry and says why in
``notes``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import resource
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, get_task_stream

from agriseg import __version__
from agriseg.classes import ClassList
from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.health.health_stream import HealthStream
from agriseg.health.preview import render_preview, save_png
from agriseg.health.products import ClassRaster, HealthJob, plan_health
from agriseg.health.qgis import class_raster_style
from agriseg.health.reliability_stamps import stamp_preview, stamp_products
from agriseg.health.task_runner import TaskRunner
from agriseg.health.verdict import Reliability
from agriseg.io.areas import as_pyproj
from agriseg.io.atomic import OutputTransaction, output_folder, output_transaction
from agriseg.io.coverage import valid_pixels_at_most
from agriseg.io.gdal_settings import on_workers, run_settings
from agriseg.io.ownership import RUN_KINDS, check_free, listing, owned_outputs
from agriseg.io.raster import RasterInfo, open_dataset, open_raster, parse_crs, pixel_grid_ok
from agriseg.io.spectral import band_names
from agriseg.models.inference import (
    DEFAULT_FORWARD_THREADS,
    Engine,
    default_threads,
    forward_streams,
    model_file,
    model_precision,
    resolve_device_name,
    resolve_engine,
)
from agriseg.models.meta import ModelMeta, is_index_model, pixel_kind
from agriseg.models.registry import find_model, is_onnx
from agriseg.reliability import RunEvidence
from agriseg.segmentation.calibration import Calibration, read_calibration
from agriseg.segmentation.execution import (
    dask_client,
    frozen_objects,
    release_free_memory,
    scheduler_address,
)
from agriseg.segmentation.numpy_pages import numpy_small_pages
from agriseg.segmentation.raster_outputs import (
    KINDS,
    ClassRasterWriter,
    block_size_for,
    class_raster_profile,
)
from agriseg.segmentation.scale import TilePlan, plan_tiles
from agriseg.segmentation.segment import Block, segment_blocks

#: Called as ``progress(tiles_done, tiles_total)``.
Progress = Callable[[int, int], None]

#: Task-name prefixes of each pipeline stage, for the timing breakdown.
STAGE_PREFIXES = {
    "stitch": ("stitch_chunk",),
}


@dataclass
class RunResult:
    """What a run produced: output paths and the summary written beside them."""

    outputs: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Things the user should know about a run that nevertheless succeeded."""
        return list(self.summary.get("warnings", []))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def default_out_dir(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}_agriseg")


def _stage_seconds(task_stream: list[dict[str, Any]]) -> dict[str, float]:
    totals = dict.fromkeys(STAGE_PREFIXES, 0.0)
    for task in task_stream:
        key = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        for stage, prefixes in STAGE_PREFIXES.items():
            if str(key).startswith(prefixes):
                totals[stage] += sum(
                    s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
                )
    return {k: round(v, 3) for k, v in totals.items()}


#: Why a plain image gets no field-health products.
PIXEL_MODE_NOTE = (
    "the input is not georeferenced: class and confidence rasters (and the preview) are "
    "on its pixel grid without a CRS, and field-health polygons and statistics were "
    "skipped (they need a CRS); areas come from --gsd when given"
)

#: What the stage seconds of ``timings_s`` measure (summed over workers, so they may
#: add up to more than ``total``).
TIMINGS_NOTE = (
    "total is wall-clock seconds; read, load (waiting for the model to load), prepare, "
    "infer and stitch are summed over every worker thread and process (seconds of work "
    "or waiting), so with several workers they can exceed total; vectorise is the "
    "health pass's busy time, cog and write the calling process's"
)


def class_table(
    pixels: np.ndarray, area_m2: np.ndarray, classes: ClassList
) -> list[dict[str, Any]]:
    """Per-class pixel count, ground area (``None`` where unknown) and share of valid pixels."""
    valid = int(pixels.sum())
    return [
        {
            "class": c.name,
            "class_id": c.id,
            "role": c.role,
            "pixels": int(pixels[c.id]),
            "area_m2": round(float(area_m2[c.id]), 4) if np.isfinite(area_m2[c.id]) else None,
            "fraction": round(float(pixels[c.id]) / valid, 6) if valid else 0.0,
        }
        for c in classes
    ]


#: Bands only multispectral cameras and satellites have.
SPECTRAL_ONLY = ("red_edge", "nir", "swir1", "swir2", "coastal")


def run_warnings(info: RasterInfo, valid_pixels: int, meta: ModelMeta) -> list[str]:
    """Warnings about a finished run, for the summary and the command line."""
    warnings = []
    unused: list[str] = []
    if meta.pixel_kinds and pixel_kind(info.dtype) not in meta.pixel_kinds:
        with open_dataset(info.path, plain=info.crs is None) as src:
            unused = [n for n in band_names(src) if n in SPECTRAL_ONLY and n not in meta.bands]
    # A 16-bit RGB export is scaled right (÷65535); a multispectral reflectance survey
    # (0-10000, with bands the model does not take) is not what an RGB model learnt.
    if unused:
        warnings.append(
            f"{info.path}: a multispectral {info.dtype} survey (it also has "
            f"{', '.join(unused)}), but model {meta.name} was trained on "
            f"{' and '.join(meta.pixel_kinds)} images of {', '.join(meta.bands)}: its "
            "values are not what the model learnt, so the classes may be wrong; train a "
            "model on such surveys (agriseg train, see Band names in docs/models.md)"
        )
    if valid_pixels == 0:
        warnings.append(
            f"{info.path}: every pixel is nodata or masked, so the outputs are empty; "
            "check the file's nodata value and mask"
        )
    return warnings


def _assumed_crs_warnings(info: RasterInfo, assume_crs: str | None) -> list[str]:
    if assume_crs is None or info.crs is None or info.crs == as_pyproj(parse_crs(assume_crs)):
        return []
    return [
        f"{info.path}: has its own CRS ({info.crs.to_string()}), which was used: "
        f"--assume-crs {assume_crs} is only for files without one"
    ]


@dataclass(frozen=True)
class RunPlan:
    """A run checked and set up before any output exists (see :func:`plan_run`).

    Attributes:
        input_path: The raster to segment.
        out_dir: Where the outputs go.
        config: The run's options.
        weights: The model's weights file.
        meta: The model's metadata.
        device: The device the model runs on (``cpu``, ``cuda``, ``cuda:N``).
        engine: What runs the model (``torch`` or ``onnx``).
        info: The validated input.
        tiles: The scale decision and the tile grid.
        paths: Where each product of the run goes, by kind (checked free or the
            earlier run's, see :mod:`agriseg.io.ownership`).
        health: The field-health pass, or None for a plain image (no CRS).
        stream_health: Whether the health pass runs beside the segmentation.
        calibration: What was measured about where the model holds up.
    """

    input_path: Path
    out_dir: Path
    config: RunConfig
    weights: Path
    meta: ModelMeta
    device: str
    engine: Engine
    info: RasterInfo
    tiles: TilePlan
    paths: dict[str, Path]
    health: HealthJob | None
    stream_health: bool
    calibration: Calibration = field(default_factory=Calibration)


def plan_run(
    input_path: Path, out_dir: Path, config: RunConfig, later: tuple[str, ...] = ()
) -> RunPlan:
    """Check the model, the input and the options, and set the run up; writes nothing.

    ``later`` are kinds of products made after the run into its folder (plant counts,
    prescriptions), whose names are checked with the run's own (see
    :func:`agriseg.io.ownership.check_free`).
    """
    weights, meta = find_model(config.model)
    if is_index_model(meta) and config.bands is None:
        from agriseg.models.index_engine import bands_for_input

        meta = bands_for_input(input_path, meta)
    calibration = read_calibration(weights)
    device = resolve_device_name(config.device)
    engine = resolve_engine(config.engine, device, weights)
    info = open_raster(input_path, meta.bands, config.bands, config.assume_crs)
    health = None
    if info.crs is not None:
        raster = ClassRaster(info.grid, class_raster_profile(info), meta.classes)
        health = plan_health(raster, config.health)
        kinds = (*RUN_KINDS, *health.output_kinds)
    else:  # pixel mode: no polygons, but a preview needs no CRS
        kinds = (*RUN_KINDS, *(("preview",) if config.health.preview else ()))
    inputs = [input_path, *([config.health.fields] if config.health.fields else [])]
    paths = check_free(out_dir, input_path.stem, (*kinds, *later), inputs)
    paths = {kind: paths[kind] for kind in kinds}
    stream = config.stream_health is not False
    tiles = plan_tiles(info, meta, config, calibration.policy)
    weights = model_file(weights, engine, tiles.model_tile, config.precision)
    if is_onnx(weights) and tiles.model_tile != meta.tile_size:
        raise InputError(
            f"{weights}: this ONNX model takes {meta.tile_size} px tiles, not "
            f"{tiles.model_tile}: use --tile-size {meta.tile_size}, or re-export it with "
            f"`agriseg export MODEL --tile-size {tiles.model_tile}`"
        )
    return RunPlan(
        input_path,
        out_dir,
        config,
        weights,
        meta,
        device,
        engine,
        info,
        tiles,
        paths,
        health,
        stream and health is not None,
        calibration,
    )


@dataclass
class _Tally:
    """Running totals of a segmentation, block by block."""

    pixels: np.ndarray
    area_m2: np.ndarray
    tiles: int = 0
    tiles_run: int = 0
    write_s: float = 0.0
    model_s: float = 0.0
    prepare_s: float = 0.0
    read_s: float = 0.0
    load_s: float = 0.0

    def add(self, block: Block, write_s: float) -> None:
        self.pixels += block.pixels
        self.area_m2 += block.area_m2
        self.tiles += block.tiles
        self.tiles_run += block.tiles_run
        self.write_s += write_s
        self.model_s += block.model_s
        self.prepare_s += block.prepare_s
        self.read_s += block.read_s
        self.load_s += block.load_s


def _segment(
    plan: RunPlan,
    client: Client,
    transaction: OutputTransaction,
    health_stream: HealthStream | None,
    evidence: RunEvidence,
    progress: Progress | None,
) -> tuple[_Tally, dict[str, float], ClassRasterWriter]:
    """Run the tiles through the model on the Dask cluster and write the class and
    confidence rasters, gathering ``evidence`` for the verdict; returns the totals,
    the Dask stage seconds and the (closed) writer, whose rasters are staged."""
    n_classes = len(plan.meta.classes)
    tally = _Tally(np.zeros(n_classes, dtype="int64"), np.zeros(n_classes, dtype="float64"))
    grid, info, config = plan.tiles.grid, plan.info, plan.config
    with (
        on_workers(client),
        get_task_stream(client) as stream,
        pixel_grid_ok(info.crs is None),
        ClassRasterWriter(
            info,
            plan.paths,
            block_size_for(grid.stride),
            plan.meta.name,
            transaction,
            plan.meta.classes,
        ) as writer,
    ):
        blocks = segment_blocks(
            client,
            info,
            grid,
            str(plan.weights),
            plan.device,
            config.threads,
            plan.tiles.resize_to,
            plan.engine,
            config.tta,
            n_classes,
            config.refine,
            evidence.plan,
        )
        for block in blocks:
            t = time.perf_counter()
            if block.has_data:
                writer.write(block.window, block.classes, block.confidence)
            tally.add(block, time.perf_counter() - t)
            if block.evidence is not None:
                evidence.add(block.evidence)
            if health_stream is not None:
                if block.has_data:
                    health_stream.add(block.window, block.classes, block.confidence)
                else:
                    health_stream.add_nodata(block.window)
            if progress is not None:
                progress(tally.tiles, grid.n_tiles)
    return tally, _stage_seconds(stream.data), writer


def model_evidence(plan: RunPlan, classes_path: Path) -> dict[str, Any]:
    """What a model without a network found in a finished run, under its own keys:
    ``vegetation_index`` (how cleanly its index separates its vegetation from soil) and,
    for the ``rows`` model, ``rows`` (see :mod:`agriseg.models.index_engine`)."""
    if not is_index_model(plan.meta):
        return {}
    from agriseg.models.index_engine import rows_evidence, vegetation_evidence

    meta, info = plan.meta, plan.info
    separation = vegetation_evidence(info, meta.bands, classes_path, meta.classes)
    evidence = {"vegetation_index": separation}
    if meta.architecture == "crop-rows":
        gsd = plan.tiles.scale.input_gsd_m
        evidence["rows"] = rows_evidence(classes_path, meta.classes, info.transform, gsd)
    return evidence


def _summarise(
    plan: RunPlan,
    tally: _Tally,
    health: dict[str, Any],
    timings_s: dict[str, float],
    reliability: Reliability,
    found: dict[str, Any],
) -> dict[str, Any]:
    """The run's ``summary.json``."""
    info, meta = plan.info, plan.meta
    valid = int(tally.pixels.sum())
    return {
        "agriseg_version": __version__,
        "reliability": reliability.to_json(),
        "input": {
            "path": str(plan.input_path.resolve()),
            "width": info.width,
            "height": info.height,
            "crs": None if info.crs is None else info.crs.to_string(),
            "bands": list(info.bands),
            "band_names": list(info.band_names),
            "dtype": info.dtype,
        },
        "model": {
            "name": meta.name,
            "path": str(plan.weights),
            "architecture": meta.architecture,
            "encoder": meta.encoder,
            "bands": list(meta.bands),
            "gsd_m": meta.gsd_m,
            "classes": meta.classes.to_json(),
        },
        "parameters": {
            **asdict(plan.config),
            "tile_size": plan.tiles.model_tile,
            "device": plan.device,
            "engine": plan.engine,
            "precision": model_precision(plan.weights),
            "stream_health": plan.stream_health,
        },
        # Flagged too where the measured range says so, finer inputs included.
        "scale": {
            **plan.tiles.summary(),
            "unreliable": plan.tiles.scale.unreliable
            or any(c.name == "scale" and c.level == "unreliable" for c in reliability.checks),
        },
        "tiles": plan.tiles.grid.n_tiles,
        "tiles_run": tally.tiles_run,  # the others hold no valid pixel
        "valid_pixels": valid,
        "classes": class_table(tally.pixels, tally.area_m2, meta.classes),
        **found,
        **health,
        "warnings": plan.tiles.scale.warnings()
        + run_warnings(info, valid, meta)
        + _assumed_crs_warnings(info, plan.config.assume_crs)
        + health.get("warnings", []),
        "timings_s": timings_s,
        "timings_note": TIMINGS_NOTE,
        "peak_rss_mb": peak_rss_mb(),
        "machine": platform.node(),
    }


def _spare_cores(plan: RunPlan, config: RunConfig) -> int:
    """The cores a run's forwards leave free (on a GPU, all but the one feeding it)."""
    if plan.device.startswith("cuda"):
        return default_threads() - 1
    threads = config.threads or DEFAULT_FORWARD_THREADS
    return default_threads() - forward_streams(plan.device, threads) * threads


def _seconds(fn: Callable[[], object]) -> float:
    """Call ``fn``; the seconds it took."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _run_jobs(jobs: deque[Callable[[], object]]) -> float:
    """Take jobs from ``jobs`` and run them until it is empty (threads may share it);
    the seconds they took."""
    spent = 0.0
    while True:
        try:
            job = jobs.popleft()
        except IndexError:
            return spent
        spent += _seconds(job)


def _has_worker_processes(config: RunConfig) -> bool:
    """Whether the run's Dask cluster has worker processes of its own (not threads here)."""
    return config.workers is not None or scheduler_address(config.scheduler) is not None


def _health_after(
    plan: RunPlan,
    job: HealthJob,
    writer: ClassRasterWriter,
    staging: Path,
    run_tasks: TaskRunner | None,
) -> tuple[dict[str, Any], float]:
    """The health pass over the finished rasters; its summary and seconds."""
    started = time.perf_counter()
    release_free_memory()
    strips = job.file_strips(writer.staged["classes"], writer.staged["confidence"])
    health = job.run(strips, plan.input_path, staging, plan.input_path.stem, run_tasks)
    return health, time.perf_counter() - started


def _pixel_preview(
    plan: RunPlan, writer: ClassRasterWriter, transaction: OutputTransaction
) -> None:
    """The preview of a run without a CRS (no health pass draws it): the classes over
    the image, both on its pixel grid."""
    with pixel_grid_ok():
        image = render_preview(writer.staged["classes"], plan.input_path)
    save_png(image, transaction.stage(plan.paths["preview"]))


def segment_raster(
    input_path: Path,
    out_dir: Path,
    config: RunConfig,
    progress: Progress | None = None,
    later: tuple[str, ...] = (),
) -> RunResult:
    """Segment ``input_path`` into class and confidence rasters and a summary.

    The input and options are validated before ``out_dir`` is touched
    (:func:`plan_run`; ``later``: see there). Outputs appear together when the run
    succeeds, and replace the earlier run's of the same input there as a whole (see
    :mod:`agriseg.io.ownership`); a failed run leaves none (and removes ``out_dir`` if it
    created it), a killed one only temporaries that the next run removes.
    """
    started = time.perf_counter()
    plan = plan_run(input_path, out_dir, config, later)
    stem = input_path.stem
    with (
        run_settings(),
        numpy_small_pages(),
        frozen_objects(),
        output_folder(out_dir),
        output_transaction() as transaction,
    ):
        staging = transaction.staging_folder(out_dir, "health")
        job = plan.health
        with contextlib.ExitStack() as health_stack:
            # A cluster of worker processes (--workers, --scheduler) also runs the health
            # pass's panes; the in-process one (threads) is closed first, freeing the model.
            cluster = health_stack.enter_context(contextlib.ExitStack())
            client = cluster.enter_context(dask_client(config.scheduler, config.workers))
            health_client = client if _has_worker_processes(config) else None
            # Entered before segmenting, so local health processes start while tiles run.
            run_tasks = (
                health_stack.enter_context(
                    job.task_runner(
                        health_client,
                        valid_pixels_at_most(input_path),
                        _spare_cores(plan, config) if plan.stream_health else None,
                    )
                )
                if job is not None
                else None
            )
            health_stream = (
                HealthStream(job, input_path, staging, stem, run_tasks)
                if plan.stream_health and job is not None
                else None
            )
            with health_stream or contextlib.nullcontext():
                evidence = RunEvidence(plan.info, plan.meta)
                tally, stages, writer = _segment(
                    plan, client, transaction, health_stream, evidence, progress
                )
                segmented = time.perf_counter()
                if health_stream is not None:
                    # The rasters are whole: their COGs are made while the pass finishes,
                    # and this thread makes any the COG thread has not begun by then (the
                    # larger, the confidence raster's, first).
                    cog_jobs: deque[Callable[[], object]] = deque(
                        functools.partial(writer.to_cog, kind) for kind in reversed(KINDS)
                    )
                    with ThreadPoolExecutor(1, "agriseg-cog") as pool:
                        cogs = pool.submit(_run_jobs, cog_jobs)
                        health = health_stream.finish()
                        health_s = health_stream.busy_s
                        cog_s = _run_jobs(cog_jobs) + cogs.result()
                    writer.stage_category_names()
            if health_client is None:
                cluster.close()
            if job is not None and health_stream is None:
                health, health_s = _health_after(plan, job, writer, staging, run_tasks)
        if job is None:
            health = {"notes": [PIXEL_MODE_NOTE]}
            health_s = 0.0
            if config.gsd_m is not None:
                tally.area_m2 = tally.pixels * config.gsd_m**2
        stages["vectorise_after_segmentation"] = round(time.perf_counter() - segmented, 3)
        if health_stream is None:
            # after the health pass, which reads the rasters: their peaks do not add up
            cog_s = _seconds(writer.to_cogs)
        found = model_evidence(plan, writer.staged["classes"])
        reliability = evidence.finish(plan.tiles.scale, plan.calibration, found)
        qml = transaction.stage(plan.paths["classes_qml"])
        qml.write_text(class_raster_style(plan.meta.classes), encoding="utf-8")
        stages["cog"] = round(cog_s, 3)
        stamp_products(staging, stem, reliability)
        written = [plan.paths[kind] for kind in RUN_KINDS]
        if job is None and "preview" in plan.paths:
            _pixel_preview(plan, writer, transaction)
            stamp_preview(transaction.staged(plan.paths["preview"]), reliability)
            written.append(plan.paths["preview"])
        for product in sorted(staging.iterdir()):
            written.append(out_dir / product.name)
            transaction.adopt(product, written[-1])
        assert set(written) == set(plan.paths.values()), f"{written} != {plan.paths}"
        # The earlier run's products that this one does not write again go with it.
        for kind, earlier in owned_outputs(out_dir, stem).items():
            if kind not in plan.paths:
                transaction.remove(earlier)
        health["outputs"] = listing(stem, written)
        stages["vectorise"] = round(health_s, 3)
        stages["read"] = round(tally.read_s, 3)
        stages["load"] = round(tally.load_s, 3)
        stages["prepare"] = round(tally.prepare_s, 3)
        stages["infer"] = round(tally.model_s, 3)
        stages["write"] = round(tally.write_s, 3)
        stages["total"] = round(time.perf_counter() - started, 3)
        summary = _summarise(plan, tally, health, stages, reliability, found)
        summary_tmp = transaction.stage(plan.paths["summary"])
        summary_tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return RunResult(outputs=plan.paths, summary=summary)

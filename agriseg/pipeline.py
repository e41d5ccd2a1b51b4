"""``agriseg run`` as one function: raster in, class raster, reports out.

A plain image (PNG, JPEG, TIFF without CRS or geotransform) runs in *pixel mode*:
class and confidence rasters on the image's pixel grid without a CRS, a summary
with pixel counts (areas only from ``RunConfig.gsd_m``), and no field-health
polygons, which need a CRS (the summary has no ``health`` entry and says why in
``notes``).
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import get_task_stream
from pyproj import CRS

from agriseg import __version__
from agriseg.atomic import output_folder, output_transaction
from agriseg.classes import ClassList
from agriseg.config import RunConfig
from agriseg.execution import dask_client, release_free_memory
from agriseg.health_stream import HealthStream
from agriseg.inference import resolve_device
from agriseg.models import ModelMeta, checkpoint_paths, read_meta, resolve
from agriseg.outputs import (
    ClassRasterWriter,
    block_size_for,
    class_raster_profile,
    output_paths,
)
from agriseg.products import ClassGrid, plan_health
from agriseg.raster import RasterInfo, open_raster, pixel_grid_ok
from agriseg.scale import plan_tiles
from agriseg.segment import segment_blocks

#: Called as ``progress(tiles_done, tiles_total)``.
Progress = Callable[[int, int], None]

#: Task-name prefixes of each pipeline stage, for the timing breakdown.
STAGE_PREFIXES = {
    "read": ("agriseg-read", "getitem", "concatenate", "finalize"),
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
    "the input is not georeferenced: class and confidence rasters are on its pixel grid "
    "without a CRS, and field-health polygons, statistics and preview were skipped "
    "(they need a CRS); areas come from --gsd when given"
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


def run_warnings(info: RasterInfo, valid_pixels: int) -> list[str]:
    """Warnings about a finished run, for the summary and the command line."""
    if valid_pixels == 0:
        return [
            f"{info.path}: every pixel is nodata or masked, so the outputs are empty; "
            "check the file's nodata value and mask"
        ]
    return []


def segment_raster(
    input_path: Path,
    out_dir: Path,
    config: RunConfig,
    progress: Progress | None = None,
) -> RunResult:
    """Segment ``input_path`` into class and confidence rasters and a summary.

    The input and options are validated before ``out_dir`` is touched. Outputs appear
    together when the run succeeds; a failed run leaves none (and removes ``out_dir``
    if it created it), a killed one only temporaries that the next run removes.
    """
    started = time.perf_counter()
    weights = resolve(config.model)
    meta: ModelMeta = read_meta(checkpoint_paths(weights)[1])
    device = str(resolve_device(config.device))
    info: RasterInfo = open_raster(input_path, meta.bands, config.bands, config.assume_crs)
    plan = plan_tiles(info, meta, config)
    grid = plan.grid
    paths = output_paths(out_dir, input_path.stem)
    job = (
        None
        if info.crs is None
        else plan_health(
            ClassGrid(
                CRS.from_wkt(info.crs.to_wkt()),
                info.transform,
                info.height,
                info.width,
                class_raster_profile(info),
                meta.classes,
            ),
            config.health,
        )
    )
    n_classes = len(meta.classes)
    pixels = np.zeros(n_classes, dtype="int64")
    area = np.zeros(n_classes, dtype="float64")
    done = 0
    write_s = 0.0
    model_s = 0.0
    prepare_s = 0.0
    stream_health = config.stream_health
    if stream_health is None:
        stream_health = device.startswith("cuda")
    with output_folder(out_dir), output_transaction() as transaction:
        staging = transaction.staging_folder(out_dir, "health")
        health_stream = (
            HealthStream(job, input_path, staging, input_path.stem)
            if stream_health and job is not None
            else None
        )
        with (
            dask_client(config.scheduler, config.workers) as client,
            health_stream or contextlib.nullcontext(),
        ):
            with (
                get_task_stream(client) as stream,
                pixel_grid_ok(info.crs is None),
                ClassRasterWriter(
                    info,
                    paths,
                    block_size_for(grid.stride),
                    meta.name,
                    transaction,
                    meta.classes,
                ) as writer,
            ):
                for block in segment_blocks(
                    client, info, grid, str(weights), device, config.threads, plan.resize_to
                ):
                    t = time.perf_counter()
                    writer.write(block.window, block.classes, block.confidence)
                    write_s += time.perf_counter() - t
                    if health_stream is not None:
                        health_stream.add(block.window, block.classes, block.confidence)
                    pixels += block.pixels
                    area += block.area_m2
                    done += block.tiles
                    model_s += block.model_s
                    prepare_s += block.prepare_s
                    if progress is not None:
                        progress(done, grid.n_tiles)
            stages = _stage_seconds(stream.data)
            segmented = time.perf_counter()
            if health_stream is not None:
                health = health_stream.finish()
                health_s = health_stream.busy_s
        if job is None:
            health = {"notes": [PIXEL_MODE_NOTE]}
            health_s = 0.0
            if config.gsd_m is not None:
                area = pixels * config.gsd_m**2
        elif health_stream is None:
            release_free_memory()
            health = job.run(
                job.file_bands(writer.staged["classes"], writer.staged["confidence"]),
                input_path,
                staging,
                input_path.stem,
            )
            health_s = time.perf_counter() - segmented
        health["outputs"] = {}
        for product in sorted(staging.iterdir()):
            final = out_dir / product.name
            transaction.adopt(product, final)
            health["outputs"][product.name] = str(final)
        stages["vectorise"] = round(health_s, 3)
        stages["vectorise_after_segmentation"] = round(time.perf_counter() - segmented, 3)
        stages["prepare"] = round(prepare_s, 3)
        stages["infer"] = round(model_s, 3)
        stages["write"] = round(write_s, 3)
        elapsed = time.perf_counter() - started
        summary = {
            "agriseg_version": __version__,
            "input": {
                "path": str(input_path.resolve()),
                "width": info.width,
                "height": info.height,
                "crs": None if info.crs is None else info.crs.to_string(),
                "bands": list(info.bands),
                "band_names": list(info.band_names),
                "dtype": info.dtype,
            },
            "model": {
                "name": meta.name,
                "path": str(weights),
                "architecture": meta.architecture,
                "encoder": meta.encoder,
                "bands": list(meta.bands),
                "gsd_m": meta.gsd_m,
                "classes": meta.classes.to_json(),
            },
            "parameters": {**asdict(config), "tile_size": plan.model_tile, "device": device},
            "scale": plan.summary(),
            "tiles": grid.n_tiles,
            "valid_pixels": int(pixels.sum()),
            "classes": class_table(pixels, area, meta.classes),
            **health,
            "warnings": plan.scale.warnings()
            + run_warnings(info, int(pixels.sum()))
            + health.get("warnings", []),
            "timings_s": {**stages, "total": round(elapsed, 3)},
            "peak_rss_mb": peak_rss_mb(),
            "machine": platform.node(),
        }
        summary_tmp = transaction.stage(paths["summary"])
        summary_tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return RunResult(outputs=paths, summary=summary)

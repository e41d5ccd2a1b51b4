"""``agriseg bench``: end-to-end speed and memory against the model alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agriseg_cli.common import add_health_options, add_segmentation_options
from agriseg_cli.run import config_from_args


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "bench",
        help="time a full run against model-only inference on the same tiles",
        description="Run the full pipeline on a generated (or given) raster in a fresh "
        "process, then time the model alone on the same tiles with the same batch size, "
        "precision and device. The last line printed is one JSON object.",
    )
    parser.add_argument(
        "--size", type=int, default=2048, help="edge of the generated raster (default 2048)"
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=None,
        help="benchmark on this raster (default: a generated survey)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the generated raster and outputs here (default: a temporary folder)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated survey (default 0)"
    )
    add_segmentation_options(parser)
    add_health_options(parser)
    parser.set_defaults(device="cpu")
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.bench import BenchConfig, bench

    config = BenchConfig(
        size=args.size, input=args.input, run=config_from_args(args), seed=args.seed
    )
    figures = bench(config, args.work_dir)
    stages = figures["stages_s"]
    width = max(map(len, stages), default=0)
    for stage, seconds in stages.items():
        print(f"{stage:>{width}}  {seconds:8.2f} s")
    gpu = figures["peak_gpu_mb"]
    print(
        f"{figures['pixels'] / 1e6:.1f} Mpx, {figures['tiles']} tiles on {figures['device']}: "
        f"{figures['end_to_end_s']:.2f} s end to end, {figures['model_only_s']:.2f} s model "
        f"only (ratio {figures['ratio']}), peak {figures['peak_rss_mb']:.0f} MiB"
        + ("" if gpu is None else f" RAM, {gpu:.0f} MiB GPU")
    )
    print(
        f"CPU outside the model: {figures['cpu_s_per_mpx_outside_model']:.2f} CPU-s per Mpx "
        f"({figures['cpu_s']:.1f} CPU-s for the run, {figures['model_cpu_s']:.1f} for the "
        "model alone)"
    )
    if figures["gpu_busy_share"] is not None:
        print(f"GPU busy {figures['gpu_busy_share']:.0%} of the run (forwards and their copies)")
    print(json.dumps(figures))
    return 0

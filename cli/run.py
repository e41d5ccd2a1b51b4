"""``agriseg run``: segment one orthomosaic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agriseg_cli.common import (
    add_health_options,
    add_segmentation_options,
    health_options_from_args,
    print_health_table,
    print_table,
    progress_bar,
)

from agriseg.config import RunConfig
from agriseg.pipeline import default_out_dir, segment_raster


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "run",
        help="segment an orthomosaic into crop / weed / diseased / soil",
        description="Segment a georeferenced orthomosaic and write a class raster, "
        "confidence raster and field-health summary.",
    )
    parser.add_argument("input", type=Path, help="GeoTIFF (or any GDAL raster) to segment")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <stem>_agriseg/ beside the input)",
    )
    add_segmentation_options(parser)
    add_health_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        model=args.model,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        bands=args.bands,
        assume_crs=args.assume_crs,
        gsd_m=args.gsd,
        scheduler=args.scheduler,
        workers=args.workers,
        threads=args.threads,
        stream_health=args.stream_health,
        resample=args.resample,
        health=health_options_from_args(args),
    )


def execute(args: argparse.Namespace) -> int:
    out = args.out or default_out_dir(args.input)
    with progress_bar(f"segmenting {args.input.name}", args.quiet) as progress:
        result = segment_raster(args.input, out, config_from_args(args), progress)
    for warning in result.warnings:
        print(f"agriseg run: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for note in result.summary.get("notes", []):
            print(f"agriseg run: note: {note}", file=sys.stderr)
        if "health" in result.summary:
            print_health_table(result.summary["health"])
        else:
            print_table(
                ("class", "pixels", "area m²", "share"),
                [
                    (
                        c["class"],
                        c["pixels"],
                        "n/a" if c["area_m2"] is None else c["area_m2"],
                        f"{100 * c['fraction']:.1f}%",
                    )
                    for c in result.summary["classes"]
                ],
            )
        print(f"outputs in {out}")
    return 0

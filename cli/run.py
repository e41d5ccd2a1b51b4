"""``agriseg run``: segment one orthomosaic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agriseg_cli import common

from agriseg.config import RunConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "run",
        help="segment an orthomosaic into the model's classes (crop, weed, soil...)",
        description="Segment a georeferenced orthomosaic (or a plain photo, on its pixel "
        "grid) into the model's classes and write a class raster, confidence raster, "
        "field-health polygons and summary.",
        epilog="A run owns its output files: a rerun into the same --out replaces the "
        "earlier run's products of the same input as a whole (those listed in its "
        "<stem>.summary.json), and refuses to replace any other file. " + common.EXIT_STATUS,
    )
    parser.add_argument("input", type=Path, help="GeoTIFF (or any GDAL raster) to segment")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <stem>_agriseg/ beside the input)",
    )
    common.add_segmentation_options(parser)
    common.add_health_options(parser)
    common.add_prescription_options(parser, after_run=True)
    common.add_plant_options(parser)
    common.add_force_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    return parser


#: RunConfig fields set by the command-line option of the same name.
SAME_NAMED = (
    "model",
    "tile_size",
    "overlap",
    "batch_size",
    "device",
    "bands",
    "assume_crs",
    "scheduler",
    "workers",
    "threads",
    "stream_health",
    "resample",
    "engine",
    "precision",
    "tta",
    "refine",
)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        **{name: getattr(args, name) for name in SAME_NAMED},
        gsd_m=args.gsd,
        health=common.health_options_from_args(args),
    )


def execute(args: argparse.Namespace) -> int:
    from agriseg.field.plants import count_run
    from agriseg.field.prescriptions import prescribe
    from agriseg.io.ownership import PLANT_KINDS, PRESCRIPTION_KINDS
    from agriseg.run import default_out_dir, segment_raster

    out = args.out or default_out_dir(args.input)
    prescription = common.prescription_options_from_args(args)  # a bad table fails first
    plants = common.plant_options_from_args(args)
    # their names are checked with the run's, before anything is written
    later = (*(PRESCRIPTION_KINDS if prescription else ()), *(PLANT_KINDS if plants else ()))
    with common.progress_bar(f"segmenting {args.input.name}", args.quiet) as progress:
        result = segment_raster(args.input, out, config_from_args(args), progress, later)
    for warning in result.warnings:
        print(f"agriseg run: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for note in result.summary.get("notes", []):
            print(f"agriseg run: note: {note}", file=sys.stderr)
        if "health" in result.summary:
            common.print_health_table(result.summary["health"], common.verdict_line(result.summary))
        else:
            print(common.verdict_line(result.summary))
            common.print_table(
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
    if prescription is not None:
        results = prescribe(out, prescription, stems=[args.input.stem], force=args.force_unreliable)
        common.print_prescriptions(results, quiet=args.quiet)
    if plants is not None:
        counted = count_run(out, plants, stems=[args.input.stem], force=args.force_unreliable)
        if not args.quiet:
            common.print_plant_counts(counted)
    if not args.quiet:
        print(f"outputs in {out}")
    return 0

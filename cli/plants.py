"""``agriseg plants``: crop plants, plants per m² and missing plants of a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from agriseg_cli import common


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "plants",
        help="count the crop plants of a finished run (points, plants per m², missing plants)",
        description="Find the crop rows and plant spacing in the class raster of every run in "
        "RUN_DIR and count the plants: <stem>.plants.gpkg (layers plants and missing_plants) "
        "and <stem>.plants.json (plants, plants per m² per field and per zone).",
    )
    parser.add_argument("run_dir", type=Path, help="--out folder of agriseg run (or a batch's)")
    parser.add_argument(
        "--fields", type=Path, default=None, help="field boundaries: plants per m² per field"
    )
    parser.add_argument(
        "--grid",
        type=float,
        default=None,
        metavar="SIZE_M",
        help="plants per m² per cell of a SIZE_M metre grid (the run's --grid zones)",
    )
    common.add_force_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no table")
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.field.plants import PlantOptions, count_run

    results = count_run(
        args.run_dir,
        PlantOptions(fields=args.fields, grid_m=args.grid),
        force=args.force_unreliable,
    )
    if not args.quiet:
        common.print_plant_counts(results)
    return 0

"""``agriseg prescribe``: spot-spray and zone-rate prescriptions from a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from agriseg_cli import common


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "prescribe",
        help="turn a finished run into sprayer prescriptions (Shapefile, ISOXML, GeoPackage)",
        description="Write spot-spray sections around the weed patches of every run in "
        "RUN_DIR and, with a rate table, a rate for each management zone: "
        "<stem>.spot.shp.zip and <stem>.zones.shp.zip (WGS84 Shapefiles, field RATE), "
        "<stem>.taskdata.zip (ISOXML TASKDATA for ISOBUS terminals: a rate grid by "
        "default, or polygon zones) and <stem>.prescription.gpkg (styled by rate for "
        "QGIS). Everything is clipped to the surveyed area (the class raster's valid "
        "pixels). See docs/sprayer.md.",
    )
    parser.add_argument("run_dir", type=Path, help="--out folder of agriseg run (or a batch's)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write them (default: beside each run's outputs)",
    )
    common.add_prescription_options(parser)
    common.add_force_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no table")
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.field.prescriptions import prescribe

    options = common.prescription_options_from_args(args)
    assert options is not None  # prescribe always prescribes
    results = prescribe(args.run_dir, options, args.out, force=args.force_unreliable)
    common.print_prescriptions(results, quiet=args.quiet)
    return 0

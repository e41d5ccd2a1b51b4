"""``agriseg batch``: segment every survey in a folder, resumably (for nightly jobs)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from agriseg_cli.common import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    add_force_option,
    add_health_options,
    add_plant_options,
    add_prescription_options,
    add_segmentation_options,
    plant_options_from_args,
    prescription_options_from_args,
    print_plant_counts,
    print_prescriptions,
    print_table,
)
from agriseg_cli.run import config_from_args

from agriseg.errors import AgrisegError, UnreliableMapError

EXIT_SURVEYS_FAILED = 1
#: Some survey's map was too unreliable to count plants or prescribe from.
EXIT_REFUSED = EXIT_ERROR


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "batch",
        help="segment every survey in a folder, skipping those already done",
        description="Segment every raster matching --pattern in SURVEY_DIR into "
        "OUT/<stem>/. Surveys already done with the same input, model and options are "
        "skipped; a failed survey is recorded in OUT/manifest.json and the batch goes on. "
        "The night's log is OUT/logs/agriseg-YYYYMMDD.log.",
        epilog=f"Exit status: 0 every survey succeeded or was already done; "
        f"{EXIT_SURVEYS_FAILED} some surveys failed (see the manifest); {EXIT_ERROR} the batch "
        "could not run (no surveys, bad options, results folder unusable or locked), or "
        "--plants/--prescribe refused an UNRELIABLE survey's map (the others got theirs); "
        f"{EXIT_INTERNAL} internal error (a bug: rerun with --debug and report "
        f"it); {EXIT_INTERRUPTED} interrupted (Ctrl-C: the next batch redoes the survey it "
        "stopped in).",
    )
    parser.add_argument("survey_dir", type=Path, help="folder holding the survey rasters")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--pattern",
        default=None,
        help="glob selecting the surveys, e.g. 'plot_*.tif' (default: every .tif and .tiff "
        "file, in any letter case); the other files are listed as not surveys",
    )
    parser.add_argument("--force", action="store_true", help="redo surveys already done")
    add_force_option(parser, "--force-unreliable")
    parser.add_argument(
        "--checksum",
        action="store_true",
        help="compare file contents (SHA-256) before redoing a survey whose file time changed",
    )
    add_segmentation_options(parser)
    add_health_options(parser)
    add_prescription_options(parser, after_run=True)
    add_plant_options(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="only warnings and errors on stderr; no table"
    )
    return parser


@contextlib.contextmanager
def batch_logging(results_dir: Path, quiet: bool) -> Iterator[logging.FileHandler]:
    """Log to the night's file in ``results_dir/logs`` and to stderr, for the block."""
    from agriseg.batch import log_path

    path = log_path(results_dir)
    logger = logging.getLogger("agriseg")
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("agriseg batch: %(message)s"))
    to_stderr.setLevel(logging.WARNING if quiet else logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(to_file)
    logger.addHandler(to_stderr)
    try:
        yield to_file
    finally:
        logger.removeHandler(to_file)
        logger.removeHandler(to_stderr)
        logger.setLevel(level)
        to_file.close()


def execute(args: argparse.Namespace) -> int:
    from agriseg.batch import BatchOptions, execute_batch, plan_batch
    from agriseg.field.plants import count_run
    from agriseg.field.prescriptions import prescribe

    options = BatchOptions(pattern=args.pattern, force=args.force, checksum=args.checksum)
    prescription = prescription_options_from_args(args)  # a bad table fails first
    plants = plant_options_from_args(args)
    # checked before the log exists: a batch that cannot run leaves nothing behind
    plan = plan_batch(args.survey_dir, args.out, config_from_args(args), options)
    with batch_logging(args.out, args.quiet) as log_file:
        try:
            result = execute_batch(plan)
        except AgrisegError as exc:
            # stderr gets the error from main(); the night's log must have it too.
            log_file.handle(
                logging.makeLogRecord(
                    {"levelno": logging.ERROR, "levelname": "ERROR", "msg": f"batch: {exc}"}
                )
            )
            raise
    if not args.quiet:
        rows = [(s.name, s.outcome, (s.verdict or "-").upper(), s.seconds) for s in result.surveys]
        print_table(("survey", "status", "verdict", "seconds"), rows)
        for survey in result.failed:
            print(f"{survey.name} failed: {survey.error}")
        if result.ignored:
            print(f"not surveys: {', '.join(p.name for p in result.ignored)}")
        print(f"manifest: {result.manifest}; log: {log_file.baseFilename}")
    done = [s for s in result.surveys if s.outcome != "failed"]
    force = args.force_unreliable
    refused = 0
    if prescription is not None:
        prescribed = []
        for s in done:
            try:
                prescribed += prescribe(args.out / s.name, prescription, force=force)
            except UnreliableMapError as exc:  # the other surveys still get theirs
                print(f"agriseg batch: {exc}", file=sys.stderr)
                refused += 1
        print_prescriptions(prescribed, quiet=args.quiet)
    if plants is not None:
        counted = []
        for s in done:
            try:
                counted += count_run(args.out / s.name, plants, force=force)
            except UnreliableMapError as exc:
                print(f"agriseg batch: {exc}", file=sys.stderr)
                refused += 1
        if not args.quiet:
            print_plant_counts(counted)
    if not result.ok:
        return EXIT_SURVEYS_FAILED
    return EXIT_REFUSED if refused else 0

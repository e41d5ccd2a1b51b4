"""``agriseg evaluate``: segment a labelled raster and score the result."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from agriseg_cli import common
from agriseg_cli.run import config_from_args

if TYPE_CHECKING:
    from agriseg.learning.evaluation import EvaluationResult


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "evaluate",
        help="score a model against labelled ground truth (IoU, F1, confusion matrix)",
        description="Segment RASTER with the full `agriseg run` pipeline and compare the "
        "class raster with LABELS (class raster, mask image or vector file): per-class IoU, "
        "precision, recall, F1, mIoU and the confusion matrix, for the model's classes. "
        "RASTER may be a plain photo (PNG, JPEG) with a mask of the same size.",
    )
    parser.add_argument("raster", type=Path, help="raster or plain image to segment")
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="class raster or mask (class ids; colours with --label-colors), or "
        "GeoPackage/Shapefile/GeoJSON",
    )
    common.add_label_options(parser)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the run outputs here (default: temporary)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the scores as JSON here")
    parser.add_argument("--print-json", action="store_true", help="print the JSON on stdout")
    common.add_segmentation_options(parser)
    common.add_health_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    return parser


def _show(result: EvaluationResult) -> None:
    s = result.scores
    common.print_table(
        ("class", "IoU", "precision", "recall", "F1", "pixels"),
        [
            (c.name, *(f"{v:.3f}" for v in (c.iou, c.precision, c.recall, c.f1)), c.support)
            for c in s.classes
        ],
    )
    print(f"mIoU {s.miou:.3f}   mean F1 {s.mean_f1:.3f}   pixel accuracy {s.accuracy:.3f}")
    print("\nconfusion matrix (rows: truth, columns: prediction)")
    names = [c.name for c in s.classes]
    common.print_table(
        ("truth \\ pred", *names),
        [(name, *row) for name, row in zip(names, s.confusion.tolist(), strict=True)],
    )


def execute(args: argparse.Namespace) -> int:
    from agriseg.io.atomic import write_text_atomic
    from agriseg.learning.datasets import parse_label_colors
    from agriseg.learning.evaluation import evaluate_raster

    config = config_from_args(args)
    colors = parse_label_colors(args.label_colors) if args.label_colors else None
    with tempfile.TemporaryDirectory(prefix="agriseg-evaluate-") as tmp:
        out = args.out or Path(tmp)
        with common.progress_bar(f"segmenting {args.raster.name}", args.quiet) as progress:
            result = evaluate_raster(
                args.raster, args.labels, out, config, args.label_column, progress, colors
            )
        report = result.to_dict()
        if args.out is None:
            report.pop("outputs")
    text = json.dumps(report, indent=2) + "\n"
    if args.json is not None:
        write_text_atomic(args.json, text)
    if args.print_json:
        sys.stdout.write(text)
    elif not args.quiet:
        _show(result)
    return 0

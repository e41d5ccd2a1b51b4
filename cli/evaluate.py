"""``agriseg evaluate``: segment labelled images and score the results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agriseg_cli import common

from agriseg.config import RunConfig

if TYPE_CHECKING:
    from agriseg.learning.evaluation import Evaluation
    from agriseg.learning.metrics import Scores


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "evaluate",
        help="score a model against labelled images (IoU, F1, confusion matrix)",
        description="Segment each image with the full `agriseg run` pipeline and compare "
        "the class raster with its labels: per-class IoU, precision, recall, F1, mIoU and "
        "the confusion matrix, pooled over all images, and a row per image. Unlabelled "
        "pixels are ignored; means are over the classes present in the labels. IMAGES "
        "and --labels pair as in `agriseg train`: folders or quoted glob patterns pair "
        "by name (001.jpg + 001.png, x.tif + x_mask.tif), one vector file labels every "
        "image.",
    )
    parser.add_argument(
        "images", type=Path, nargs="+", help="images to score: files, folders or glob patterns"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="the labels: one file (GeoPackage/Shapefile/GeoJSON of polygons, class raster "
        "or mask), or a folder or quoted glob pattern of masks",
    )
    common.add_label_options(parser)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the run outputs here (default: temporary)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the scores as JSON here (default: none)"
    )
    parser.add_argument("--print-json", action="store_true", help="print the JSON on stdout")
    common.add_model_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(**{name: getattr(args, name) for name in common.MODEL_OPTIONS}, gsd_m=args.gsd)


def _class_table(s: Scores) -> None:
    common.print_table(
        ("class", "IoU", "precision", "recall", "F1", "pixels"),
        [
            (c.name, *(f"{v:.3f}" for v in (c.iou, c.precision, c.recall, c.f1)), c.support)
            for c in s.classes
        ],
    )
    scored = ", ".join(s.scored_classes)
    print(
        f"mIoU {s.miou:.3f}   mean F1 {s.mean_f1:.3f}   pixel accuracy {s.accuracy:.3f}   "
        f"(means over the labelled classes: {scored})"
    )


def _show(result: Evaluation) -> None:
    names = [c.name for c in result.classes]
    if len(result.images) > 1:
        common.print_table(
            ("image", "pixels", "mIoU", *(f"{n} IoU" for n in names)),
            [
                (
                    i.image.name,
                    int(i.scores.confusion.sum()),
                    f"{i.scores.miou:.3f}",
                    *(f"{c.iou:.3f}" if c.support else "-" for c in i.scores.classes),
                )
                for i in result.images
            ],
        )
        print(f"\npooled over {len(result.images)} images")
    s = result.pooled
    _class_table(s)
    if s.unpredicted:
        print(f"{s.unpredicted} labelled pixel(s) fell on nodata input and are not scored")
    print("\nconfusion matrix (rows: truth, columns: prediction)")
    common.print_table(
        ("truth \\ pred", *names),
        [(name, *row) for name, row in zip(names, s.confusion.tolist(), strict=True)],
    )


def execute(args: argparse.Namespace) -> int:
    from agriseg.io.atomic import write_text_atomic
    from agriseg.learning.datasets import pair_files, parse_label_colors
    from agriseg.learning.evaluation import evaluate_files

    config = config_from_args(args)
    colors = parse_label_colors(args.label_colors) if args.label_colors else None
    pairs = pair_files(args.images, [args.labels])
    with common.progress_bar("scoring", args.quiet, unit="image") as progress:
        result = evaluate_files(
            pairs, config, args.out, args.label_column, colors, args.label_layer, progress
        )
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    if args.json is not None:
        write_text_atomic(args.json, text)
    if args.print_json:
        sys.stdout.write(text)
    elif not args.quiet:
        _show(result)
    return 0

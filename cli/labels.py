"""``agriseg labels``: start labelling a survey in QGIS."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "labels",
        help="start labelling a survey in QGIS (labels init)",
        description="Make the files to label a survey with in QGIS, for `agriseg train`.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="write an empty GeoPackage polygon layer to draw labels in",
        description="Write an empty GeoPackage polygon layer in SURVEY's CRS whose class "
        "field is a drop-down of the class names, with the class colours (its default "
        "QGIS style, stored in the file). Open it in QGIS over the survey, toggle "
        "editing and draw polygons; whatever is not drawn stays unlabelled and is "
        "ignored by `agriseg train` and `agriseg evaluate`.",
    )
    init.add_argument("survey", type=Path, help="the georeferenced survey (GeoTIFF) to label")
    which = init.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        default=None,
        help="offer the classes of this model: shipped name, model folder or checkpoint "
        "(default: the default model's: soil, crop, weed, diseased)",
    )
    which.add_argument(
        "--classes",
        default=None,
        help="offer these classes: a JSON file or name[:role][:#colour],... e.g. "
        "'soil:background,peanut:crop,grass:weed:#e628a0' (default: --model's)",
    )
    init.add_argument(
        "--out",
        type=Path,
        default=None,
        help="GeoPackage to write (default: SURVEY's name + .labels.gpkg beside it)",
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.classes import ClassList
    from agriseg.label_layer import LABEL_COLUMN, init_label_layer
    from agriseg.models.registry import find_model

    if args.classes is not None:
        classes = ClassList.parse(args.classes)
    else:
        classes = find_model(args.model or "default")[1].classes
    out = init_label_layer(args.survey, args.out, classes)
    print(f"labelling layer {out} (classes: {', '.join(classes.names)})")
    print(
        f"open it in QGIS over {args.survey}, toggle editing, draw polygons and pick each "
        f"one's {LABEL_COLUMN}; then: agriseg train {args.survey} --labels {out} "
        "--from default --out MODEL_FOLDER"
    )
    return 0

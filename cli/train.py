"""``agriseg train``: train or fine-tune a model on labelled rasters or plain images."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agriseg_cli import common

from agriseg.config import ARCHITECTURE_NAMES

if TYPE_CHECKING:
    from agriseg.learning.training import EpochResult, TrainConfig, TrainingSet


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "train",
        help="train or fine-tune a segmentation model on labelled images",
        description="Train a model on images labelled by polygons (a GeoPackage from "
        "`agriseg labels init`, a Shapefile or GeoJSON with a class column), class "
        "rasters, or mask images of plain photos (class ids, or colours with "
        "--label-colors). Unlabelled pixels are ignored. The model learns exactly the "
        "classes the labels mark. IMAGES and --labels may be folders or quoted glob "
        "patterns (paired by name: 001_image.png + 001_annotation.png, x.png + x_mask.png); "
        "one vector file labels every image it covers. Writes the model into the --out "
        "folder after every epoch (model.safetensors, model.json, model.state.pt for "
        "--resume).",
    )
    parser.add_argument(
        "images", type=Path, nargs="+", help="training images: files, folders or glob patterns"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="the labels: one file (GeoPackage/Shapefile/GeoJSON of polygons, class raster "
        "or mask), or a folder or quoted glob pattern of masks; or `rows`: each survey's own "
        "crop rows (crop on them, weed between; see docs/labelfree.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="model folder to write (OUT/model.safetensors + model.json), or a file "
        "ending in .safetensors",
    )
    common.add_label_options(parser)
    parser.add_argument(
        "--classes",
        default=None,
        help="classes to predict: a JSON file or name[:role][:#colour],... e.g. "
        "'soil:background,maize:crop,thistle:weed'; each must be labelled somewhere "
        "(default: those the labels mark)",
    )
    parser.add_argument(
        "--gsd",
        type=float,
        default=None,
        help="pixel size of the images in metres (default: from their georeferencing; "
        "plain photos: unknown)",
    )
    parser.add_argument(
        "--arch", choices=ARCHITECTURE_NAMES, default=None, help="default: unet, or --from's"
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder name (default: --from's, else mobilenet_v2; segnet: its own)",
    )
    parser.add_argument(
        "--from",
        dest="init",
        default=None,
        help="fine-tune a shipped model (default, agriseg-pspnet...) or a checkpoint "
        "(default: a new model)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes of --steps steps (default: 10; with --minutes, as many as fit)",
    )
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per epoch")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget: train for at most this many minutes (validations included), "
        "ending the learning-rate schedule with it; as many epochs as fit, or at most "
        "--epochs x --steps when --epochs is given (default: none, --epochs x --steps)",
    )
    parser.add_argument(
        "--chips-per-step",
        type=int,
        default=8,
        help="training chips per optimiser step (the training batch)",
    )
    parser.add_argument(
        "--batch-size",
        dest="chips_per_step",
        type=int,
        action=common.deprecated_alias("--batch-size", "--chips-per-step"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--chip-size", type=int, default=256, help="chip edge in px")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: 1e-3; 1e-4 with --labels rows)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share held out for validation: whole images from 8 images on (at most 4 "
        "million labelled pixels), else blocks of each image",
    )
    parser.add_argument(
        "--val-block", type=int, default=None, help="validation block edge in px (default: chip)"
    )
    parser.add_argument(
        "--gap",
        type=int,
        default=None,
        help="px kept clear around validation blocks (default: a quarter chip)",
    )
    parser.add_argument(
        "--bands",
        type=common.band_list,
        default=None,
        help="1-based bands, e.g. 1,2,3 (default: --from's bands by name, else every "
        "non-alpha band)",
    )
    parser.add_argument(
        "--band-names",
        type=common.band_name_list,
        default=None,
        help="names of the trained bands, e.g. red,green,blue,red_edge,nir "
        "(default: the first image's band descriptions or colour interpretation)",
    )
    parser.add_argument(
        "--tile-size", type=int, default=512, help="tile edge `agriseg run` will use"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=0,
        help="early stopping: stop after this many epochs without a better validation "
        "mIoU, keeping the best epoch's weights (0: never; the model holds the last epoch)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="arithmetic of the training steps: auto = bf16 (bfloat16, weights kept in "
        "float32) on a CPU with bfloat16 instructions, about twice the steps per minute; "
        "else fp32",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's model.state.pt")
    parser.add_argument(
        "--description", default="", help="stored in the model's metadata (default: none)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from agriseg.classes import ClassList
    from agriseg.learning.datasets import parse_label_colors
    from agriseg.learning.training import TrainConfig

    lr = args.lr if args.lr is not None else (1e-4 if str(args.labels) == "rows" else 1e-3)
    return TrainConfig(
        architecture=args.arch,
        encoder=args.encoder,
        init=args.init,
        classes=ClassList.parse(args.classes) if args.classes else None,
        label_colors=parse_label_colors(args.label_colors) if args.label_colors else {},
        gsd_m=args.gsd,
        chip_size=args.chip_size,
        chips_per_step=args.chips_per_step,
        epochs=args.epochs if args.epochs is not None else (10 if args.minutes is None else 10_000),
        steps_per_epoch=args.steps,
        minutes=args.minutes,
        learning_rate=lr,
        val_fraction=args.val_fraction,
        val_block=args.val_block,
        gap=args.gap,
        bands=args.bands,
        band_names=args.band_names,
        label_column=args.label_column,
        label_layer=args.label_layer,
        tile_size=args.tile_size,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        patience=args.patience,
        resume=args.resume,
        description=args.description,
        command=command_line(args),
    )


def command_line(args: argparse.Namespace) -> str:
    """The options of this run as an equivalent ``agriseg train`` command."""
    words = ["agriseg", "train", *map(str, args.images)]
    skip = {"images", "command", "execute", "debug", "quiet"}
    for key, value in vars(args).items():
        if key in skip or value is None or value is False:
            continue
        flag = "--from" if key == "init" else "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words.append(flag)
            words.append(",".join(map(str, value)))
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _epoch_table(result: EpochResult) -> None:
    head = f"epoch {result.epoch}/{result.epochs}: loss {result.loss:.4f}"
    if result.validation is None:
        print(f"{head} ({result.seconds:.0f} s)")
        return
    print(f"{head}, validation mIoU {result.validation.miou:.3f} ({result.seconds:.0f} s)")
    # A class no validation pixel is labelled with has no score (it is left out of
    # the mIoU): a "0.000" there would read as a failure.
    common.print_table(
        ("class", "IoU", "F1", "pixels"),
        [
            (c.name, f"{c.iou:.3f}", f"{c.f1:.3f}", c.support)
            if c.support
            else (c.name, "-", "-", "0 (not labelled)")
            for c in result.validation.classes
        ],
    )


def _show_set(data: TrainingSet) -> None:
    from agriseg.learning.training import label_counts

    counts = label_counts(data.scenes, len(data.classes))
    print(f"{len(data.scenes)} image(s); the model learns {len(data.classes)} classes:")
    common.print_table(
        ("class", "role", "labelled pixels"),
        [(c.name, c.role, int(counts[c.id])) for c in data.classes],
    )


def execute(args: argparse.Namespace) -> int:
    from agriseg.optional import require_torch

    require_torch("agriseg train")
    import torch

    from agriseg.learning.datasets import pair_files
    from agriseg.learning.training import load_training_set, train
    from agriseg.models.registry import output_checkpoint

    config = config_from_args(args)
    config.check()
    output_checkpoint(args.out)  # a bad --out fails before the images are read
    labels: list[Path] = [args.labels]
    if str(args.labels) == "rows":  # self-training on the surveys' own rows
        from agriseg.learning.row_labels import label_classes_for, label_with_rows
        from agriseg.models.registry import find_model

        base = find_model(config.init)[1].classes if config.init is not None else None
        target = label_classes_for(base)
        folder = args.out.with_name(args.out.name + ".row-labels")
        labels = label_with_rows(args.images, folder, target)
        config = dataclasses.replace(
            config, classes=target, keep_classes=target == base, vegetation_mask="index"
        )
    sources = pair_files(args.images, labels)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with common.progress_bar("reading labels", args.quiet, unit="image") as progress:
        data = load_training_set(sources, config, progress)
    for warning in data.warnings:
        print(f"agriseg train: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        _show_set(data)
    config = dataclasses.replace(config, classes=data.classes)
    with common.progress_bar("training", args.quiet, unit="step") as progress:
        result = train(
            data.scenes,
            args.out,
            config,
            data.band_names,
            progress,
            None if args.quiet else _epoch_table,
        )
    if not args.quiet:
        last = result.history[-1].epoch if result.history else None
        if result.stopped_early:
            print(
                f"stopped early: validation mIoU has not improved for {config.patience} "
                f"epochs (--patience)"
            )
        if result.best_epoch is not None and result.best_epoch != last:
            print(f"the model holds epoch {result.best_epoch}'s weights, the best on validation")
        print(f"model {result.weights}; use it with: agriseg run SURVEY --model {args.out}")
    return 0

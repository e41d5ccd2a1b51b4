"""``agriseg train``: train or fine-tune a model on labelled rasters or plain images."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from agriseg_cli import common

from agriseg.config import ARCHITECTURE_NAMES

if TYPE_CHECKING:
    from agriseg.learning.training import EpochResult, TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "train",
        help="train or fine-tune a segmentation model on labelled rasters",
        description="Train a model on rasters labelled by class rasters or vector files "
        "(polygons with a class-name column), or on plain photos (PNG, JPEG, TIFF) with "
        "mask images (class ids, or colours with --label-colors). Images and labels may be "
        "files (paired in order), folders or quoted glob patterns (paired by name: "
        "001_image.png + 001_annotation.png, x.png + x_mask.png). Writes OUT.safetensors + "
        "OUT.json after every epoch, and OUT.state.pt for --resume.",
    )
    parser.add_argument(
        "rasters", type=Path, nargs="+", help="training images: files, folders or glob patterns"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        required=True,
        help="label files, folders or glob patterns: class rasters, masks, or "
        "GeoPackage/Shapefile/GeoJSON; or `rows`: each survey's own crop rows (crop on "
        "them, weed between; see docs/labelfree.md)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint path (NAME)")
    common.add_label_options(parser)
    parser.add_argument(
        "--classes",
        default=None,
        help="classes to predict: a JSON file or name[:role][:#colour],... e.g. "
        "'soil:background,maize:crop,thistle:weed' (default: --from's, else from the labels)",
    )
    parser.add_argument(
        "--gsd", type=float, default=None, help="pixel size of the images in metres (plain images)"
    )
    parser.add_argument("--arch", choices=ARCHITECTURE_NAMES, default=None, help="default unet")
    parser.add_argument(
        "--encoder", default=None, help="encoder name (default mobilenet_v2; segnet: its own)"
    )
    parser.add_argument(
        "--from",
        dest="init",
        default=None,
        help="fine-tune a shipped model (default, agriseg-pspnet...) or a checkpoint",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (default 100)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chip-size", type=int, default=256, help="chip edge in px (default 256)")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3, 3e-4 with --from")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of blocks")
    parser.add_argument("--val-block", type=int, default=None, help="block edge (default chip)")
    parser.add_argument("--gap", type=int, default=None, help="px kept clear around val blocks")
    parser.add_argument(
        "--bands", type=common.band_list, default=None, help="1-based bands, e.g. 1,2,3"
    )
    parser.add_argument(
        "--band-names",
        type=common.band_name_list,
        default=None,
        help="names of the trained bands, e.g. red,green,blue,red_edge,nir "
        "(default: the first raster's band descriptions or colour interpretation)",
    )
    parser.add_argument("--tile-size", type=int, default=512, help="inference tile to record")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    parser.add_argument("--description", default="", help="stored in the checkpoint metadata")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from agriseg.classes import ClassList
    from agriseg.learning.datasets import parse_label_colors
    from agriseg.learning.training import TrainConfig

    lr = args.lr if args.lr is not None else (3e-4 if args.init else 1e-3)
    return TrainConfig(
        architecture=args.arch,
        encoder=args.encoder,
        init=args.init,
        classes=ClassList.parse(args.classes) if args.classes else None,
        label_colors=parse_label_colors(args.label_colors) if args.label_colors else {},
        gsd_m=args.gsd,
        chip_size=args.chip_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        learning_rate=lr,
        val_fraction=args.val_fraction,
        val_block=args.val_block,
        gap=args.gap,
        bands=args.bands,
        band_names=args.band_names,
        label_column=args.label_column,
        tile_size=args.tile_size,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        description=args.description,
        command=command_line(args),
    )


def command_line(args: argparse.Namespace) -> str:
    """The options of this run as an equivalent ``agriseg train`` command."""
    words = ["agriseg", "train", *map(str, args.rasters)]
    skip = {"rasters", "command", "execute", "debug", "quiet"}
    for key, value in vars(args).items():
        if key in skip or value is None or value is False:
            continue
        flag = "--from" if key == "init" else "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += (
                [flag, *(str(v) for v in value)]
                if key not in ("bands", "band_names")
                else [flag, ",".join(map(str, value))]
            )
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _epoch_table(result: EpochResult) -> None:
    head = f"epoch {result.epoch}/{result.epochs}: loss {result.loss:.4f}"
    if result.validation is None:
        print(f"{head} ({result.seconds:.0f} s)")
        return
    print(f"{head}, validation mIoU {result.validation.miou:.3f} ({result.seconds:.0f} s)")
    common.print_table(
        ("class", "IoU", "F1", "pixels"),
        [(c.name, f"{c.iou:.3f}", f"{c.f1:.3f}", c.support) for c in result.validation.classes],
    )


def execute(args: argparse.Namespace) -> int:
    from agriseg.optional import require_torch

    require_torch("agriseg train")
    import torch

    from agriseg.learning.datasets import pair_files
    from agriseg.learning.training import train_files

    config = config_from_args(args)
    labels = args.labels
    if [str(p) for p in labels] == ["rows"]:  # self-training on the surveys' own rows
        from dataclasses import replace

        from agriseg.learning.row_labels import ROW_LABEL_CLASSES, label_with_rows

        labels = label_with_rows(args.rasters, args.out.with_name(args.out.name + ".row-labels"))
        config = replace(config, classes=ROW_LABEL_CLASSES)
    sources = pair_files(args.rasters, labels)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with common.progress_bar("training", args.quiet, unit="step") as progress:
        result = train_files(
            sources, args.out, config, progress, None if args.quiet else _epoch_table
        )
    if not args.quiet:
        print(f"checkpoint {result.weights} (+ .json, .state.pt)")
    return 0

"""``agriseg export``: write a model as ONNX for ONNX Runtime and QGIS Deepness."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "export",
        help="export a model to ONNX (for QGIS Deepness or `agriseg run --model FILE.onnx`)",
        description="Export a shipped model or checkpoint to ONNX: float32 NCHW tiles of one "
        "fixed size, any batch, softmax probabilities out, with the metadata the QGIS "
        "Deepness plugin reads (classes, resolution, tile size, standardisation) and "
        "agriseg's own, so `agriseg run --model FILE.onnx` works too.",
    )
    parser.add_argument("model", help="shipped model name or checkpoint path")
    parser.add_argument(
        "--format", choices=("onnx",), default="onnx", help="export format (default onnx)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output file (default: ./NAME.onnx)")
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="the exported model's fixed tile edge in pixels (default: the model's own)",
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.models.onnx_export import deepness_metadata, deepness_overlap_px, export_model

    path, meta = export_model(args.model, args.out, args.tile_size)
    print(
        f"{path}: {meta.name}, {len(meta.classes)} classes ({', '.join(meta.classes.names)}), "
        f"{meta.tile_size} px tiles, bands {', '.join(meta.bands)}"
    )
    deepness = deepness_metadata(meta, meta.tile_size)
    overlap = deepness["tiles_overlap"]
    resolution = f"resolution {deepness['resolution']} cm/px, " if "resolution" in deepness else ""
    print(
        f"Deepness defaults: {resolution}overlap {overlap} % "
        f"({deepness_overlap_px(meta.tile_size, overlap)} px), remove small segments off"
    )
    return 0

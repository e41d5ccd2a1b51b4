"""``agriseg models``: list the models shipped with agriseg."""

from __future__ import annotations

import argparse
import json

from agriseg_cli.common import print_table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "models",
        help="list the shipped models",
        description="List the models shipped inside agriseg with their metadata.",
    )
    parser.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    return parser


def _miou(metrics: dict) -> str:
    pooled = metrics.get("heldout_pooled") or metrics.get("validation") or {}
    value = pooled.get("miou")
    return f"{value:.3f}" if isinstance(value, float) else "-"


def execute(args: argparse.Namespace) -> int:
    from agriseg.models.registry import ALIASES, DEFAULT_MODEL, shipped_dir, shipped_models

    metas = shipped_models()
    if args.json:
        print(json.dumps([json.loads(m.to_json()) for m in metas], indent=2))
        return 0
    aliases = {v: k for k, v in ALIASES.items() if k != "default"}
    rows = []
    for m in metas:
        weights = shipped_dir() / f"{m.name}.safetensors"
        # A model without a network (is_index_model) ships its metadata alone.
        size = f"{weights.stat().st_size / 2**20:.1f}" if weights.is_file() else "-"
        rows.append(
            (
                m.name + (" (default)" if m.name == DEFAULT_MODEL else ""),
                aliases.get(m.name, ""),
                f"{m.architecture}/{m.encoder}",
                ",".join(m.bands),
                ",".join(m.classes.names),
                m.tile_size,
                "-" if m.gsd_m is None else f"{100 * m.gsd_m:.1f}",
                _miou(m.metrics),
                size,
            )
        )
    print_table(
        ("name", "alias", "architecture", "bands", "classes", "tile", "GSD cm", "mIoU", "MB"), rows
    )
    for m in metas:
        if m.description:
            print(f"{m.name}: {m.description}")
    return 0

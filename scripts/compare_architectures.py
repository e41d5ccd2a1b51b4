"""Compare every architecture agriseg can train, with one recipe and one budget.

    .venv/bin/python scripts/compare_architectures.py            # train + evaluate all
    .venv/bin/python scripts/compare_architectures.py --time     # CPU ms per 512² tile
    .venv/bin/python scripts/compare_architectures.py --table    # the tables of docs/models.md

Each architecture is trained from scratch on the shipped models' synthetic training
surveys (``scripts/train_default.py``: seeds 1-40) with the same seed, chips, steps and
schedule, then scored by ``agriseg evaluate`` on the same six held-out surveys (seeds
10001-10006), confusion matrices pooled. Results land in ``build/compare/ARCH.json``
as each architecture finishes, so an interrupted comparison still has a partial table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default import (  # noqa: E402
    HELDOUT,
    MODELS,
    ROOT,
    evaluate,
    training_scenes,
    write_heldout,
)

from agriseg.classes import CLASS_NAMES  # noqa: E402
from agriseg.learning.training import TrainConfig, train  # noqa: E402
from agriseg.models.architectures import ARCHITECTURES, parameter_count  # noqa: E402
from agriseg.models.inference import get_predictor  # noqa: E402
from agriseg.models.registry import load_model  # noqa: E402

#: Cheapest first, so that a partial run still compares the usual ones.
ORDER = ("unet", "pspnet", "segnet", "fpn", "fcn", "deeplabv3plus", "deeplabv3")
#: Architecture options: the shipped U-Net's decoder, the registry's defaults otherwise.
ARCH_PARAMS = {"unet": MODELS["unet"]["arch_params"]}
TILE = 512


def recipe(args: argparse.Namespace) -> dict:
    return {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps,
        "chip_size": args.chip_size,
        "batch_size": args.batch_size,
        "seed": 0,
        "val_fraction": args.val_fraction,
        "threads": args.threads,
    }


def train_and_score(arch: str, args: argparse.Namespace, scenes: list, heldout: list) -> dict:
    out = args.build / "models" / arch
    spec = recipe(args)
    config = TrainConfig(
        architecture=arch,
        arch_params=dict(ARCH_PARAMS.get(arch, {})),
        chip_size=spec["chip_size"],
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        steps_per_epoch=spec["steps_per_epoch"],
        val_fraction=spec["val_fraction"],
        device="cpu",
        seed=spec["seed"],
        description=f"{arch}: architecture comparison (scripts/compare_architectures.py)",
        command="scripts/compare_architectures.py " + " ".join(sys.argv[1:]),
    )
    started = time.perf_counter()

    def report(result, started: float = started) -> None:
        v = result.to_dict()
        print(
            f"[{arch}] epoch {result.epoch}/{result.epochs} loss {result.loss:.4f} "
            f"val mIoU {v.get('val_miou')} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )

    train(scenes, out, config, on_epoch=report)
    train_s = time.perf_counter() - started
    model, meta = load_model(out)
    started = time.perf_counter()
    scored = evaluate(str(out), heldout, args.build / "eval")
    return {
        "architecture": arch,
        "encoder": meta.encoder,
        "arch_params": meta.arch_params,
        "parameters": parameter_count(model),
        "recipe": spec,
        "train_s": round(train_s, 1),
        "evaluate_s": round(time.perf_counter() - started, 1),
        **scored,
    }


def tile_ms(
    model: str, args: argparse.Namespace, engine: str, tta: bool = False, refine: str = "none"
) -> float:
    """Best of ``args.repeats`` single-threaded passes of one 512² tile, in ms: the model,
    and ``tta`` and ``refine`` when given."""
    predictor = get_predictor(model, "cpu", 1, engine)  # type: ignore[arg-type]
    tile = np.random.default_rng(0).standard_normal((1, 3, TILE, TILE)).astype("float32")
    predictor.probabilities(tile)  # warm-up (and, for ONNX, the export)
    best = min(
        predictor.probabilities(tile, tta=tta, refine=refine)[1]  # type: ignore[arg-type]
        for _ in range(args.repeats)
    )
    return round(1000 * best, 1)


#: Post-processing of the default model measured by ``--post``: name -> evaluate options.
POST = {"none": (), "refine crf": ("--refine", "crf")}
DEFAULT_MODEL = "agriseg-unet"


def post_processing(args: argparse.Namespace, heldout: list[Path]) -> dict:
    """The default model on the held-out surveys without and with each post-processing:
    pooled scores, wall seconds of the six evaluations and the runs' device seconds."""
    found = {}
    for name, options in POST.items():
        folder = args.build / "post" / name.replace(" ", "-")
        started = time.perf_counter()
        scored = evaluate(DEFAULT_MODEL, heldout, folder, options)
        wall = time.perf_counter() - started
        infer = 0.0
        for image in heldout:
            summary = folder / f"{image.stem}_{DEFAULT_MODEL}" / f"{image.stem}.summary.json"
            infer += json.loads(summary.read_text())["timings_s"]["infer"]
        found[name] = {**scored, "wall_s": round(wall, 1), "infer_s": round(infer, 1)}
        print(f"[{name}] mIoU {scored['heldout_pooled']['miou']:.3f}, {wall:.0f} s", flush=True)
    return found


def post_table(found: dict) -> str:
    lines = [
        "| `agriseg-unet` | "
        + " | ".join(f"{c} IoU" for c in CLASS_NAMES)
        + " | pooled mIoU | device s (summed) | wall, six surveys |",
        "|---|" + "---|" * len(CLASS_NAMES) + "---|---|---|",
    ]
    for name, r in found.items():
        if name == "tile_ms":
            continue
        pooled = r["heldout_pooled"]
        ious = [f"{pooled['classes'][c]['iou']:.3f}" for c in CLASS_NAMES]
        option = "" if name == "none" else f" `--{name}`"
        lines.append(
            f"|{option or ' plain'} | "
            + " | ".join(ious)
            + f" | **{pooled['miou']:.3f}** | {r['infer_s']:.1f} s | {r['wall_s']:.1f} s |"
        )
    modes = {k: v for k, v in found.items() if k != "tile_ms"}
    per = ["", "| survey | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for seed, gsd, _ in HELDOUT:
        stem = f"heldout_{seed}"
        cells = [f"{r['heldout_per_survey'][stem]['miou']:.3f}" for r in modes.values()]
        per.append(f"| {stem} ({100 * gsd:.1f} cm) | " + " | ".join(cells) + " |")
    if "tile_ms" in found:
        per += [
            "",
            "CPU ms per 512² tile, one thread, ONNX Runtime: "
            + ", ".join(f"{k} {v:.0f}" for k, v in found["tile_ms"].items()),
        ]
    return "\n".join(lines + per)


def table(folder: Path) -> str:
    found = [folder / f"{a}.json" for a in ORDER if (folder / f"{a}.json").exists()]
    rows = [json.loads(p.read_text()) for p in found]
    lines = [
        "| architecture | parameters | "
        + " | ".join(f"{c} IoU" for c in CLASS_NAMES)
        + " | mIoU | CPU ms / 512² tile (ONNX Runtime, torch) | training s (loaded VM) |",
        "|---|---|" + "---|" * len(CLASS_NAMES) + "---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["heldout_pooled"]["miou"]):
        pooled = r["heldout_pooled"]
        ious = [f"{pooled['classes'][c]['iou']:.3f}" for c in CLASS_NAMES]
        ms = r.get("tile_ms", {})
        timing = f"{ms['onnx']:.0f}, {ms['torch']:.0f}" if ms else "-"
        lines.append(
            f"| {r['architecture']} / {r['encoder']} | {r['parameters'] / 1e6:.2f} M | "
            + " | ".join(ious)
            + f" | **{pooled['miou']:.3f}** | {timing} | {r['train_s']:.0f} |"
        )
    if rows:
        spec = rows[0]["recipe"]
        lines += [
            "",
            f"Recipe, the same for all: {spec['epochs']} epochs x {spec['steps_per_epoch']} "
            f"steps of {spec['batch_size']} chips of {spec['chip_size']} px, seed "
            f"{spec['seed']}, {spec['threads']} CPU threads; held-out surveys: "
            + ", ".join(f"{s} ({100 * g:.1f} cm)" for s, g, _ in HELDOUT)
            + ".",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", help=f"any of {', '.join(ORDER)} (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="blocks held out for per-epoch validation"
    )
    parser.add_argument("--chip-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per engine")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "compare")
    parser.add_argument("--time", action="store_true", help="only time the trained models")
    parser.add_argument("--table", action="store_true", help="only print the markdown tables")
    parser.add_argument(
        "--post",
        action="store_true",
        help=f"only score {DEFAULT_MODEL} without and with --refine crf on the held-out surveys",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.archs) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}")
    archs = [a for a in ORDER if a in (args.archs or ORDER)]
    results = args.build / "results"
    results.mkdir(parents=True, exist_ok=True)
    post = results / "post_processing.json"
    if args.table:
        print(table(results))
        if post.exists():
            print("\n" + post_table(json.loads(post.read_text())))
        return 0
    if args.post:
        found = post_processing(args, write_heldout(ROOT / "build" / "heldout"))
        post.write_text(json.dumps(found, indent=2) + "\n")
        print(post_table(found))
        return 0
    if args.time:
        if post.exists():
            found = json.loads(post.read_text())
            options = {"none": {}, "tta": {"tta": True}, "refine crf": {"refine": "crf"}}
            found["tile_ms"] = {
                name: tile_ms(DEFAULT_MODEL, args, "onnx", **kw) for name, kw in options.items()
            }
            post.write_text(json.dumps(found, indent=2) + "\n")
            print(f"[{DEFAULT_MODEL}] ms per {TILE}² tile, one thread: {found['tile_ms']}")
        for arch in archs:
            path = results / f"{arch}.json"
            if not path.exists():
                continue
            found = json.loads(path.read_text())
            model = str(args.build / "models" / arch)
            found["tile_ms"] = {e: tile_ms(model, args, e) for e in ("onnx", "torch")}
            path.write_text(json.dumps(found, indent=2) + "\n")
            print(f"[{arch}] ms per {TILE}² tile, one thread: {found['tile_ms']}", flush=True)
        return 0
    torch.set_num_threads(args.threads)
    heldout = write_heldout(ROOT / "build" / "heldout")
    scenes = training_scenes()
    for arch in archs:
        found = train_and_score(arch, args, scenes, heldout)
        (results / f"{arch}.json").write_text(json.dumps(found, indent=2) + "\n")
        print(f"[{arch}] held-out mIoU {found['heldout_pooled']['miou']:.3f}", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

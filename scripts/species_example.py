"""The "Train on your own fields" example (docs/labelling.md), measured: five own classes.

    .venv/bin/python scripts/species_example.py [--work DIR] [--epochs 4] [--steps 40]

Draws three training surveys and one held-out survey whose weeds are labelled by
kind (``agriseg generate --weed-species``: soil, maize, grass_weed, broadleaf_weed,
thistle), fine-tunes the default model on the three with ``agriseg train --from
default --classes ...`` (the 4-class head is replaced by a 5-class one), and scores
it on the held-out survey with ``agriseg evaluate``. Every step is the command a
user would type; the commands and the scores are printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AGRISEG = [sys.executable, "-m", "agriseg_cli.main"]
CLASSES = "soil:background,maize:crop,grass_weed:weed,broadleaf_weed:weed,thistle:weed"
TRAIN_SEEDS = (101, 102, 103)
HELDOUT_SEED = 201


def agriseg(*words: str) -> None:
    print("$ agriseg " + shlex.join(words), flush=True)
    subprocess.run([*AGRISEG, *words], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "species_example")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    for seed in (*TRAIN_SEEDS, HELDOUT_SEED):
        size = str(args.size)
        agriseg("generate", str(work), "--stem", f"s{seed}", "--seed", str(seed), "--size", size,
                "--weed-species", "--quiet")  # fmt: skip
    images = [str(work / f"s{s}.tif") for s in TRAIN_SEEDS]
    labels = [str(work / f"s{s}.labels.gpkg") for s in TRAIN_SEEDS]
    model = work / "my-farm"
    started = time.perf_counter()
    agriseg("train", *images, "--labels", *labels, "--classes", CLASSES, "--from", "default",
            "--epochs", str(args.epochs), "--steps", str(args.steps), "--out", str(model),
            "--quiet")  # fmt: skip
    trained_s = time.perf_counter() - started
    scores = work / "heldout_scores.json"
    agriseg("evaluate", str(work / f"s{HELDOUT_SEED}.tif"), "--labels",
            str(work / f"s{HELDOUT_SEED}.labels.gpkg"), "--model", str(model),
            "--json", str(scores), "--quiet")  # fmt: skip
    result = json.loads(scores.read_text())
    print(f"\ntraining: {trained_s / 60:.1f} min ({args.epochs} x {args.steps} steps)")
    print(f"held-out survey s{HELDOUT_SEED}: mIoU {result['miou']:.3f}")
    for name, c in result["classes"].items():
        iou = "n/a" if c["iou"] is None else f"{c['iou']:.3f}"
        print(f"  {name:15s} IoU {iou}  pixels {c['support']}")
    # What the field-health statistics see: classes summed by role.
    roles = [r.split(":")[1] for r in CLASSES.split(",")]
    names = sorted(set(roles), key=roles.index)
    confusion = np.array(result["confusion_matrix"]["counts"])
    member = np.array([[r == name for r in roles] for name in names], dtype="int64")
    merged = member @ confusion @ member.T
    tp = np.diag(merged)
    iou = tp / (merged.sum(0) + merged.sum(1) - tp)
    print("by role: " + ", ".join(f"{n} IoU {v:.3f}" for n, v in zip(names, iou, strict=True)))


if __name__ == "__main__":
    main()

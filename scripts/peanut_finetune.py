"""Fine-tune the default model on real hand-labelled photos under a time budget, and score it.

    .venv/bin/python scripts/peanut_finetune.py [--data ../shared/data/peanut]
        [--work build/peanut] [--minutes 5 10 20] [-- EXTRA TRAIN OPTIONS]

The peanut photos (``../shared/data/peanut``: 400 RGB photos of peanut fields with
colour masks, CC BY-SA 4.0, Tran & Phan 2023; see its README) come with a fixed split:
ids divisible by 5 are the 80 test photos, the rest the 320 training photos. For each
budget this types what a user would::

    agriseg train train/images --labels train/masks --label-colors ... --gsd 0.001 \\
        --from default --minutes M --out WORK/model-M
    agriseg evaluate test/images --labels test/masks --label-colors ... \\
        --model WORK/model-M --json WORK/model-M.scores.json

and prints one table row per budget: the wall time of the training and the pooled
IoU of soil, crop and weed on the test photos. The folders are symbolic links into
``--data``; nothing is copied. Anything trained here carries the photos' licence
(CC BY-SA 4.0): keep it out of shipped models.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGRISEG = [sys.executable, "-m", "agriseg_cli.main"]
COLOURS = "crop=#00ff00,weed=#ff0000,soil=#000000"
#: The photos' pixel size is not published; about a millimetre.
GSD_M = "0.001"


def split_folders(data: Path, work: Path) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images, masks), "test": (images, masks)}`` of links into ``data``."""
    parts = dict(
        line.split()[:2]
        for line in (data / "split.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    folders = {}
    for part in ("train", "test"):
        images, masks = work / part / "images", work / part / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        folders[part] = (images, masks)
    for photo in sorted((data / "images").glob("*.jpg")):
        part = parts[photo.stem]
        images, masks = folders[part]
        for link, target in (
            (images / photo.name, photo),
            (masks / f"{photo.stem}.png", data / "labels" / f"{photo.stem}.png"),
        ):
            if not link.exists():
                link.symlink_to(target.resolve())
    return folders


def agriseg(*words: str | Path) -> float:
    """Run one agriseg command as a user would; return its wall time."""
    words = [str(w) for w in words]
    print("$ agriseg " + shlex.join(words), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([*AGRISEG, *words], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "peanut")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "peanut")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0])
    parser.add_argument("--tag", default="", help="suffix of the model folders")
    parser.add_argument("extra", nargs="*", help="more train options, after --")
    args = parser.parse_args()
    folders = split_folders(args.data, args.work)
    (train_images, train_masks), (test_images, test_masks) = folders["train"], folders["test"]
    print("| budget | training wall time | soil | crop | weed | mIoU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for minutes in args.minutes:
        model = args.work / "-".join(filter(None, ("model", f"{minutes:g}", args.tag)))
        seconds = agriseg(
            "train", train_images, "--labels", train_masks, "--label-colors", COLOURS,
            "--gsd", GSD_M, "--from", "default", "--minutes", f"{minutes:g}", "--out", model,
            "--quiet", *args.extra,
        )  # fmt: skip
        report = model.with_name(model.name + ".scores.json")
        agriseg(
            "evaluate", test_images, "--labels", test_masks, "--label-colors", COLOURS,
            "--gsd", GSD_M, "--model", model, "--device", "cpu", "--json", report, "--quiet",
        )  # fmt: skip
        pooled = json.loads(report.read_text())["classes"]
        iou = {name: pooled[name]["iou"] for name in ("soil", "crop", "weed")}
        row = [f"{minutes:g} min", f"{seconds / 60:.1f} min"]
        row += [f"{iou[name]:.3f}" for name in ("soil", "crop", "weed")]
        row.append(f"**{sum(iou[n] for n in ('soil', 'crop', 'weed')) / 3:.3f}**")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

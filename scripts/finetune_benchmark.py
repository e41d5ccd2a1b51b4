"""Benchmark: does fine-tuning the default model on a new survey help on its held-out part?

    .venv/bin/python scripts/finetune_benchmark.py

Draws one survey with parameters outside the default models' training ranges
(coarser GSD, dim light, blur, noise, colour cast), splits it into a western
training half and an eastern held-out half with a gap between, scores the
default model on the held-out half with ``agriseg evaluate``, fine-tunes it on
the training half (vector labels) with ``agriseg train --from default`` and
scores it again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window

from agriseg.learning.synthetic import draw_params, generate_survey, write_survey

ROOT = Path(__file__).resolve().parent.parent
SIZE = 1024
GAP = 64


def crop(src_path: Path, dst_path: Path, window: Window) -> Path:
    with rasterio.open(src_path) as src:
        profile = src.profile | {
            "width": int(window.width),
            "height": int(window.height),
            "transform": src.window_transform(window),
        }
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    return dst_path


def agriseg(*args: str | Path) -> None:
    exe = Path(sys.executable).with_name("agriseg")
    subprocess.run([str(exe), *map(str, args)], check=True)


def evaluate(raster: Path, labels: Path, model: str | Path, report: Path) -> dict:
    agriseg(
        "evaluate", raster, "--labels", labels, "--model", model, "--device", "cpu",
        "--json", report, "--quiet",
    )  # fmt: skip
    return json.loads(report.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "build" / "finetune")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    folder = args.folder
    params = draw_params(
        30001, SIZE, SIZE, gsd_m=0.045, brightness=0.62, blur_px=1.6, noise=0.045,
        white_balance=(1.18, 1.0, 0.82), row_angle_deg=52.0,
    )  # fmt: skip
    paths = write_survey(generate_survey(params, 30001), folder, "survey")
    half = SIZE // 2
    train = crop(paths.image, folder / "train.tif", Window(0, 0, half - GAP // 2, SIZE))
    test = crop(paths.image, folder / "test.tif", Window(half + GAP // 2, 0, half - GAP // 2, SIZE))
    before = evaluate(test, paths.polygons, args.model, folder / "before.json")
    tuned = folder / "finetuned"
    agriseg(
        "train", train, "--labels", paths.polygons, "--from", args.model, "--out", tuned,
        "--epochs", args.epochs, "--steps", args.steps, "--device", "cpu",
        "--threads", args.threads, "--val-fraction", "0.1", "--quiet",
    )  # fmt: skip
    after = evaluate(test, paths.polygons, tuned, folder / "after.json")
    print(f"{'class':10} {'before':>8} {'after':>8}")
    for name in before["classes"]:
        b, a = before["classes"][name]["iou"], after["classes"][name]["iou"]
        print(f"{name:10} {b:8.3f} {a:8.3f}")
    print(f"{'mIoU':10} {before['miou']:8.3f} {after['miou']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

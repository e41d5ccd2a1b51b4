"""Benchmark: does fine-tuning the default model on a new survey help on its held-out part?

    .venv/bin/python scripts/finetune_benchmark.py

Draws one survey with parameters outside the default models' training ranges
(coarser GSD, dim light, blur, noise, colour cast), splits it into a western
training half and an eastern held-out half with a gap between, scores the
default model on the held-out half with ``agriseg evaluate``, fine-tunes it on
the training half (vector labels) with ``agriseg train --from default`` and
scores it again.

With ``--sparse N`` it also fine-tunes, with the same steps, on sparse labels: about
``N`` hand-sized polygons per class on the training half, as a user draws them in
QGIS (each is the class's pixels within ``--radius`` px of a random pixel of that
class, traced as a polygon: a weed outlined, a patch of soil, part of a crop row),
everything else unlabelled. It prints both fine-tuned scores and the ratio of their
mIoU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import shape

from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey

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


def sparse_polygons(
    labels_tif: Path, window: Window, per_class: int, radius: int, out: Path, seed: int = 0
) -> tuple[Path, float]:
    """About ``per_class`` hand-sized polygons of each class inside ``window`` of the
    survey's class raster, written as a GeoPackage (layer ``labels``, column
    ``class``); returns it and the share of the window's pixels they label."""
    rng = np.random.default_rng(seed)
    with rasterio.open(labels_tif) as src:
        truth = src.read(1, window=window)
        transform = src.window_transform(window)
        crs = src.crs
        tags = src.tags()
    names = {k: tags.get(f"class_{k}", str(k)) for k in range(255)}
    h, w = truth.shape
    yy, xx = np.mgrid[:h, :w]
    drawn = np.full(truth.shape, 255, np.uint8)
    for k in np.unique(truth):
        if k == 255:
            continue
        rows, cols = np.nonzero(truth == k)
        for i in rng.choice(rows.size, size=min(per_class, rows.size), replace=False):
            disk = (yy - rows[i]) ** 2 + (xx - cols[i]) ** 2 <= radius**2
            drawn[disk & (truth == k)] = k
    records = [
        {"class": names[int(v)], "geometry": shape(g)}
        for g, v in shapes(drawn, mask=drawn != 255, transform=transform)
    ]
    gpd.GeoDataFrame(records, crs=crs).to_file(out, layer="labels")
    return out, float((drawn != 255).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "build" / "finetune")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparse", type=int, default=0, help="polygons per class (0: none)")
    parser.add_argument("--radius", type=int, default=12, help="polygon radius in px")
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
    label_sets = {"after": paths.polygons}
    if args.sparse:
        window = Window(0, 0, half - GAP // 2, SIZE)
        sparse, share = sparse_polygons(
            paths.labels, window, args.sparse, args.radius, folder / "sparse.gpkg"
        )
        label_sets["sparse"] = sparse
        print(f"sparse labels: {args.sparse} polygons per class, {share:.1%} of the pixels")
    results = {"before": before}
    for name, labels in label_sets.items():
        tuned = folder / f"finetuned-{name}"
        agriseg(
            "train", train, "--labels", labels, "--from", args.model, "--out", tuned,
            "--epochs", args.epochs, "--steps", args.steps, "--device", "cpu",
            "--threads", args.threads, "--val-fraction", "0.1", "--quiet",
        )  # fmt: skip
        results[name] = evaluate(test, paths.polygons, tuned, folder / f"{name}.json")
    print(f"{'class':10} " + " ".join(f"{k:>8}" for k in results))
    for name in before["classes"]:
        print(
            f"{name:10} " + " ".join(f"{r['classes'][name]['iou']:8.3f}" for r in results.values())
        )
    print(f"{'mIoU':10} " + " ".join(f"{r['miou']:8.3f}" for r in results.values()))
    if "sparse" in results:
        print(f"sparse / full labels: {results['sparse']['miou'] / results['after']['miou']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

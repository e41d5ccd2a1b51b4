"""Accuracy of the models without a network (``--model vegetation`` and ``--model rows``).

* Ten generated row-crop surveys (seeds 30001-30010: never used to train the shipped
  networks, whose training seeds are 1..N, held-out 10001+, calibration 20001+), row
  directions spread over 0-180°, GSD 1-3 cm, weed cover from sparse to dense, the
  row spacing as drawn (0.4-0.75 m). Each runs through ``agriseg run`` with both
  models and is scored against its own labels: IoU of soil, crop (diseased plants
  count as crop) and weed (every weed, in or between the rows; vegetation the rows
  model leaves ``plants_off_rows`` counts as neither), and vegetation IoU.
* The 80 peanut test photos (``split.txt``: ids divisible by 5), vegetation IoU of
  ``--model vegetation`` against the hand-drawn masks (crop and weed = vegetation).

Prints a Markdown table and writes ``labelfree_benchmark.json`` into ``--out``.

Usage::

    .venv/bin/python scripts/labelfree_benchmark.py --out /tmp/labelfree \\
        [--surveys 10] [--size 1024] [--peanut /path/to/peanut] [--photos 80]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from agriseg.config import HealthOptions, RunConfig
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import CROP, DISEASED, SOIL, WEED, draw_params, generate_survey
from agriseg.run import segment_raster

#: Seeds of the surveys scored here (see the module docstring).
FIRST_SEED = 30001


def survey_params(k: int, n: int, size: int) -> tuple[int, dict[str, float]]:
    """Seed and overrides of survey ``k`` of ``n``: directions, GSD and weeds spread."""
    t = k / max(n - 1, 1)
    overrides = {
        "gsd_m": 0.01 + 0.02 * t,
        "row_angle_deg": (7.0 + 180.0 * k / n) % 180.0,
        "weed_density": 0.01 + 0.11 * ((3 * k) % n) / max(n - 1, 1),
    }
    return FIRST_SEED + k, overrides


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    union = int((truth | pred).sum())
    return float((truth & pred).sum() / union) if union else float("nan")


def read_classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def run_model(image: Path, out: Path, model: str) -> tuple[np.ndarray, dict, float]:
    config = RunConfig(model=model, device="cpu", health=HealthOptions(preview=False))
    started = time.perf_counter()
    result = segment_raster(image, out, config)
    return read_classes(result.outputs["classes"]), result.summary, time.perf_counter() - started


def score_surveys(folder: Path, n: int, size: int) -> list[dict]:
    results = []
    for k in range(n):
        seed, overrides = survey_params(k, n, size)
        params = draw_params(seed, size, size, **overrides)
        paths = write_survey(generate_survey(params, seed), folder / "surveys", f"s{seed}")
        with rasterio.open(paths.labels) as src:
            truth = src.read(1)
        truth = np.where(truth == DISEASED, CROP, truth)
        veg_truth = truth != SOIL
        veg, _, veg_s = run_model(paths.image, folder / f"veg_{seed}", "vegetation")
        rows, summary, rows_s = run_model(paths.image, folder / f"rows_{seed}", "rows")
        ious = {
            "soil": iou(truth == SOIL, rows == 0),
            "crop": iou(truth == CROP, rows == 1),
            "weed": iou(truth == WEED, rows == 2),
        }
        record = {
            "seed": seed,
            "gsd_m": round(params.gsd_m, 4),
            "row_angle_deg": round(params.row_angle_deg, 1),
            "row_spacing_m": round(params.row_spacing_m, 3),
            "weed_density": round(params.weed_density, 3),
            "weed_share": round(float((truth == WEED).mean()), 4),
            "vegetation_iou": round(iou(veg_truth, veg == 1), 4),
            "rows_vegetation_iou": round(iou(veg_truth, (rows >= 1) & (rows <= 3)), 4),
            "iou": {k: round(v, 4) for k, v in ious.items()},
            "miou": round(float(np.mean(list(ious.values()))), 4),
            "rows": summary.get("rows"),
            "seconds": {"vegetation": round(veg_s, 2), "rows": round(rows_s, 2)},
        }
        print(json.dumps(record), flush=True)
        results.append(record)
    return results


def score_peanut(root: Path, folder: Path, photos: int) -> list[dict]:
    ids = [i for i in range(1, 401) if i % 5 == 0][:photos]
    results = []
    for i in ids:
        image = root / "images" / f"{i:04d}.jpg"
        mask = np.asarray(Image.open(root / "labels" / f"{i:04d}.png").convert("RGB"))
        truth = mask.astype(np.int32).sum(axis=2) > 200  # green crop or red weed
        veg, _, _ = run_model(image, folder / f"peanut_{i:04d}", "vegetation")
        results.append({"id": i, "vegetation_iou": round(iou(truth, veg == 1), 4)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder and results")
    parser.add_argument("--surveys", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024, help="survey edge in pixels")
    parser.add_argument("--peanut", type=Path, default=Path("/work/shared/data/peanut"))
    parser.add_argument("--photos", type=int, default=80, help="peanut test photos (0: none)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    surveys = score_surveys(args.out, args.surveys, args.size)
    peanut = score_peanut(args.peanut, args.out, args.photos) if args.photos else []

    def mean(values: list[float]) -> float:
        return round(float(np.nanmean(values)), 4) if values else float("nan")

    totals = {
        "surveys": len(surveys),
        "rows_miou": mean([r["miou"] for r in surveys]),
        "rows_weed_iou": mean([r["iou"]["weed"] for r in surveys]),
        "rows_crop_iou": mean([r["iou"]["crop"] for r in surveys]),
        "rows_soil_iou": mean([r["iou"]["soil"] for r in surveys]),
        "vegetation_iou_surveys": mean([r["vegetation_iou"] for r in surveys]),
        "peanut_photos": len(peanut),
        "vegetation_iou_peanut": mean([r["vegetation_iou"] for r in peanut]),
    }
    (args.out / "labelfree_benchmark.json").write_text(
        json.dumps({"totals": totals, "surveys": surveys, "peanut": peanut}, indent=2) + "\n"
    )
    print("| seed | GSD cm | rows ° | spacing m | weeds | veg IoU | soil | crop | weed | mIoU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in surveys:
        print(
            f"| {r['seed']} | {100 * r['gsd_m']:.1f} | {r['row_angle_deg']:.0f} | "
            f"{r['row_spacing_m']:.2f} | {100 * r['weed_share']:.1f} % | "
            f"{r['vegetation_iou']:.3f} | {r['iou']['soil']:.3f} | {r['iou']['crop']:.3f} | "
            f"{r['iou']['weed']:.3f} | {r['miou']:.3f} |"
        )
    print(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()

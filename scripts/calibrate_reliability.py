"""Set each shipped model's reliability thresholds from runs it should trust and
runs it should not, and record them (and the rates they give) with the model.

In-domain: 20 generated surveys at 1.5-4 cm GSD from seeds 30001-30020 (training
uses 1-40, held-out evaluation 10001+, int8 calibration 20001+). Out-of-domain:
the 80 test photos of the real peanut data set (``/work/shared/data/peanut``,
ids divisible by 5) as plain photos and with ``--gsd 0.001``; a generated survey
at 30 cm and the same field averaged to 10 m; grey, low-light and grey low-light
versions of three in-domain surveys.

Each case is run through the real pipeline (``agriseg run``'s
:func:`~agriseg.pipeline.segment_raster`) once; the checks' recorded values are kept
in ``--results`` (JSON lines, resumed when rerun), and thresholds derived from them
without running again (``--from-results``):

* no false alarm in-domain: each pixel check's ``doubtful`` threshold lies beyond
  the worst in-domain value by ``--margin`` (relative);
* its ``unreliable`` threshold lies halfway from there to the median out-of-domain
  value, and at least ``--margin`` further out.

Usage::

    .venv/bin/python scripts/calibrate_reliability.py --install > build/calibrate.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from agriseg.config import HealthOptions, RunConfig
from agriseg.health.verdict import Check, judge
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.models.registry import ALIASES, find_model
from agriseg.reliability import DEFAULT_THRESHOLDS, JUDGES, check_scale
from agriseg.run import segment_raster
from agriseg.segmentation.calibration import read_calibration, update_calibration
from agriseg.segmentation.scale import decide_scale

PEANUT = Path("/work/shared/data/peanut")
IN_DOMAIN_SEEDS = range(30001, 30021)
DARK_SEEDS = (30001, 30002, 30003)
FAR_SEED = 30101
SIZE = 512
MODELS = ("agriseg-unet", "agriseg-pspnet")
QUICK = HealthOptions(polygons="none", preview=False, formats=("geojson",))


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    image: Path
    gsd_m: float | None = None


def _in_domain_gsd(seed: int) -> float:
    return round(float(np.random.default_rng(seed).uniform(0.015, 0.04)), 4)


def _write_like(
    src_path: Path, out: Path, data: np.ndarray, transform: Affine | None = None
) -> Path:
    with rasterio.open(src_path) as src:
        profile = src.profile
    profile.update(count=data.shape[0], dtype="uint8", height=data.shape[1], width=data.shape[2])
    if transform is not None:
        profile.update(transform=transform)
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def in_domain_cases(folder: Path) -> list[Case]:
    """The held-out generated surveys (seeds never used in training), written once."""
    cases = []
    for seed in IN_DOMAIN_SEEDS:
        path = folder / f"indomain_{seed}.tif"
        if not path.exists():
            params = draw_params(seed, SIZE, SIZE, gsd_m=_in_domain_gsd(seed))
            write_survey(generate_survey(params, seed), folder, path.stem)
        cases.append(Case(path.stem, "in-domain", path))
    return cases


def make_cases(folder: Path, photos_every: int = 1) -> list[Case]:
    cases = in_domain_cases(folder)
    for seed in DARK_SEEDS:
        src = folder / f"indomain_{seed}.tif"
        with rasterio.open(src) as opened:
            rgb = opened.read().astype("float32")
        grey = np.repeat((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None], 3, axis=0)
        for kind, data in (("grey", grey), ("lowlight", rgb * 0.3), ("grey-lowlight", grey * 0.3)):
            path = folder / f"{kind}_{seed}.tif"
            if not path.exists():
                _write_like(src, path, np.clip(data, 0, 255).astype("uint8"))
            cases.append(Case(path.stem, kind, path))
    coarse = folder / f"field30cm_{FAR_SEED}.tif"
    if not coarse.exists():
        params = draw_params(FAR_SEED, 990, 990, gsd_m=0.3)
        write_survey(generate_survey(params, FAR_SEED), folder, coarse.stem)
    far = folder / f"field10m_{FAR_SEED}.tif"
    if not far.exists():
        with rasterio.open(coarse) as src:
            rgb = src.read().astype("float32")
            t = src.transform
        blocks = rgb.reshape(3, 30, 33, 30, 33).mean(axis=(2, 4))
        _write_like(
            coarse, far, blocks.round().astype("uint8"), Affine(10.0, 0, t.c, 0, -10.0, t.f)
        )
    cases += [Case(coarse.stem, "30 cm", coarse), Case(far.stem, "10 m", far)]
    lines = (PEANUT / "split.txt").read_text().splitlines()
    test = sorted(int(w[0]) for w in map(str.split, lines) if len(w) == 2 and w[1] == "test")
    for i in test[::photos_every]:
        image = PEANUT / "images" / f"{i:04d}.jpg"
        cases.append(Case(f"peanut_{i:04d}", "peanut photo", image))
        cases.append(Case(f"peanut_{i:04d}_1mm", "peanut photo --gsd 0.001", image, 0.001))
    return cases


def run_cases(
    cases: list[Case], model: str, results: Path, work: Path, keys: tuple[str, ...] = ()
) -> None:
    """Run ``model`` on each case not yet in ``results`` (JSON lines) and append its row:
    the verdict, and the summary's ``keys``."""
    done = set()
    if results.exists():
        done = {(r["model"], r["case"]) for r in map(json.loads, results.read_text().splitlines())}
    for case in cases:
        if (model, case.name) in done:
            continue
        config = RunConfig(model=model, device="cpu", gsd_m=case.gsd_m, health=QUICK)
        summary = segment_raster(case.image, work / "out", config).summary
        row = {
            "model": model,
            "case": case.name,
            "group": case.group,
            "gsd_m": summary["scale"]["input_gsd_m"],
            "reliability": summary["reliability"],
            **{key: summary.get(key) for key in keys},
        }
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            json.dumps(
                {k: row[k] for k in ("model", "case")} | {"verdict": row["reliability"]["verdict"]}
            ),
            flush=True,
        )


def _values(rows: list[dict[str, Any]], check: str, key: str) -> list[float]:
    out = []
    for r in rows:
        value = r["reliability"]["checks"].get(check, {}).get(key)
        if value is not None:
            out.append(float(value))
    return out


def derive(rows: list[dict[str, Any]], margin: float) -> dict[str, dict[str, float]]:
    """Thresholds: beyond every in-domain value; unreliable towards the out-of-domain median."""
    inside = [r for r in rows if r["group"] == "in-domain"]
    outside = [r for r in rows if r["group"] != "in-domain"]

    def upper(check: str, key: str, floor: float) -> tuple[float, float]:
        worst_in = max(_values(inside, check, key))
        doubtful = max(worst_in * (1 + margin), floor)
        far = statistics.median(_values(outside, check, key) or [doubtful * 2])
        return round(doubtful, 4), round(max((doubtful + far) / 2, doubtful * (1 + margin)), 4)

    def lower(check: str, key: str) -> tuple[float, float]:
        worst_in = min(_values(inside, check, key))
        doubtful = worst_in * (1 - margin)
        far = statistics.median(_values(outside, check, key) or [doubtful / 2])
        return round(doubtful, 4), round(min((doubtful + far) / 2, doubtful * (1 - margin)), 4)

    conf = upper("confidence", "low_share", 0.02)
    colour = upper("colour", "distance", 0.5)
    iou = lower("vegetation", "iou")
    gaps = [
        abs(a - b)
        for a, b in zip(
            _values(inside, "vegetation", "index_cover"),
            _values(inside, "vegetation", "model_cover"),
            strict=True,
        )
    ]
    cover = max(gaps) * (1 + margin) + 0.02
    return {
        "confidence": {"doubtful_low_share": conf[0], "unreliable_low_share": conf[1]},
        "colour": {"doubtful_distance": colour[0], "unreliable_distance": colour[1]},
        "vegetation": {
            **DEFAULT_THRESHOLDS["vegetation"],
            "doubtful_iou": iou[0],
            "unreliable_iou": iou[1],
            "doubtful_cover_gap": round(cover, 4),
            "unreliable_cover_gap": round(2 * cover, 4),
            "min_gap": round(min(_values(inside, "vegetation", "gap")) * (1 - margin), 3),
        },
    }


def rejudge(row: dict[str, Any], limits: dict[str, dict[str, float]], weights: Path) -> str:
    """The verdict of a recorded run under ``limits`` and the model's current calibration."""
    calibration = read_calibration(weights)
    _, meta = find_model(weights)
    recorded = row["reliability"]["checks"]
    scale = decide_scale(row["gsd_m"], meta.gsd_m, "auto", calibration.policy)
    checks = [check_scale(scale, calibration, meta.gsd_m)]
    checks.append(Check("input", recorded["input"]["level"], recorded["input"].get("reason")))
    for name, check in JUDGES.items():
        values = {k: v for k, v in recorded[name].items() if k not in ("level", "reason")}
        checks.append(
            check(values or None, limits[name])
            if name == "vegetation"
            else check(values, limits[name])
        )
    return judge(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--results", type=Path, default=Path("build/reliability_runs.jsonl"))
    parser.add_argument("--work-dir", type=Path, default=Path("build/reliability_cases"))
    parser.add_argument(
        "--photos-every", type=int, default=1, help="use every n-th peanut test photo"
    )
    parser.add_argument("--margin", type=float, default=0.25)
    parser.add_argument("--from-results", action="store_true", help="derive only, no runs")
    parser.add_argument("--install", action="store_true", help="store with the models")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    cases = make_cases(args.work_dir, args.photos_every)
    if not args.from_results:
        with tempfile.TemporaryDirectory(prefix="agriseg-calibrate-") as tmp:
            for model in args.models:
                run_cases(cases, model, args.results, Path(tmp))
    rows = [json.loads(line) for line in args.results.read_text().splitlines()]
    for model in args.models:
        weights, _ = find_model(ALIASES.get(model, model))
        mine = [r for r in rows if r["model"] == model]
        limits = {k: dict(v) for k, v in DEFAULT_THRESHOLDS.items()} | derive(mine, args.margin)
        verdicts: dict[str, Counter[str]] = defaultdict(Counter)
        for r in mine:
            verdicts[r["group"]][rejudge(r, limits, weights)] += 1
        rates = {g: dict(c) for g, c in verdicts.items()}
        print(f"\n### {model}\n\n| cases | n | ok | doubtful | unreliable |\n|---|---|---|---|---|")
        for group, counts in rates.items():
            n = sum(counts.values())
            print(
                f"| {group} | {n} | "
                + " | ".join(str(counts.get(v, 0)) for v in ("ok", "doubtful", "unreliable"))
                + " |"
            )
        print(json.dumps({k: v for k, v in limits.items() if k != "scale"}, indent=1))
        if args.install:
            record = {k: v for k, v in limits.items() if k != "scale"}
            update_calibration(
                weights,
                "checks",
                record,
            )
            update_calibration(
                weights,
                "checks_measured",
                {
                    "script": "scripts/calibrate_reliability.py",
                    "margin": args.margin,
                    "verdicts": rates,
                },
            )


if __name__ == "__main__":
    main()

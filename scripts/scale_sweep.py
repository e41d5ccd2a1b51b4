"""Measure where each shipped model holds up across ground sampling distances, and
what ``--resample auto`` should do outside that range.

Renders one generated field (same seed, same ground extent, so the same plants) at
GSDs from 0.5 to 8 cm, segments every rendering with each shipped model as it is
(``--resample off``) and resampled to several target GSDs, and scores each run
against the rendering's own truth (mIoU). From the scores it derives the model's
:class:`agriseg.scale.ScalePolicy` (inputs used as they are where that is within
``--tolerance`` of the best; the single finer and coarser targets that stay closest
to the best outside) and the GSD range it holds up at (``auto`` within
``--holds`` of its peak) and is usable at (within ``--usable``). With ``--install``
it writes both into ``agriseg/weights/calibration/NAME.json`` and runs ``auto``
through the real pipeline at every GSD to check the policy.

Usage::

    .venv/bin/python scripts/scale_sweep.py --install > build/scale_sweep.log 2>&1 &
    .venv/bin/python scripts/scale_sweep.py --from-results build/scale_sweep.json

Runs one model's runs at a time on the CPU with its default engine (int8 ONNX);
about 15 minutes for both models on two shared cores.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from agriseg.config import HealthOptions, RunConfig
from agriseg.learning.evaluation import evaluate_raster
from agriseg.learning.synthetic import draw_params, generate_survey, write_survey
from agriseg.models.registry import ALIASES, find_model
from agriseg.segmentation.calibration import update_calibration
from agriseg.segmentation.scale import MAX_DOWNSAMPLE, MAX_UPSAMPLE, ScalePolicy

GSDS_CM = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
TARGETS_CM = (0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.9, 4.0)
#: Inputs from 1.5 cm are also enlarged, to the finer targets and by these factors
#: (to input GSD / factor); finer ones are only shrunk.
FACTORS = (1.5, 2.0, 3.0)
FACTORS_FROM_CM = 1.5
MODELS = ("agriseg-unet", "agriseg-pspnet")
#: Health products are not scored: only the class raster is written and read.
SCORING_HEALTH = HealthOptions(polygons="none", preview=False, formats=("geojson",))


def render(
    folder: Path, gsd_m: float, ground_m: float, seed: int, angle: float
) -> tuple[Path, Path]:
    """Write the field at ``gsd_m``; returns the image and its truth labels."""
    edge = round(ground_m / gsd_m)
    params = draw_params(seed, edge, edge, gsd_m=gsd_m, row_angle_deg=angle)
    paths = write_survey(generate_survey(params, seed), folder, f"field_{1000 * gsd_m:g}mm")
    return paths.image, paths.labels


def effective_target(gsd_m: float, target_m: float) -> float:
    """The target a run resamples ``gsd_m`` to: within the resampling limits, as in
    :func:`agriseg.scale.decide_scale`; the input's own GSD when that is no resampling."""
    target = min(max(target_m, gsd_m / MAX_UPSAMPLE), gsd_m * MAX_DOWNSAMPLE)
    return gsd_m if abs(target / gsd_m - 1) <= 0.005 else round(target, 6)


def score(image: Path, labels: Path, out: Path, model: str, resample: str | float) -> float:
    config = RunConfig(model=model, device="cpu", resample=resample, health=SCORING_HEALTH)
    return round(evaluate_raster(image, labels, out, config).scores.miou, 4)


def targets_for(gsd: float) -> list[float]:
    """Target GSDs a rendering at ``gsd`` is segmented at (itself: as it is)."""
    enlarge = gsd >= FACTORS_FROM_CM / 100
    targets = {effective_target(gsd, t / 100) for t in TARGETS_CM if enlarge or t / 100 > gsd}
    targets.add(gsd)
    if enlarge:
        targets |= {effective_target(gsd, gsd / f) for f in FACTORS}
    return sorted(targets)


def sweep(folder: Path, args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """Every model at every GSD, as it is and at every (reachable) target; combinations
    already in ``results`` are kept, not run again."""
    scenes = {g: render(folder, g / 100, args.ground, args.seed, args.angle) for g in GSDS_CM}
    results["scene"] = {"seed": args.seed, "ground_m": args.ground, "row_angle_deg": args.angle}
    models = results.setdefault("models", {})
    for model in args.models:
        rows = models.setdefault(model, [])
        for g, (image, labels) in scenes.items():
            gsd = g / 100
            for target in targets_for(gsd):
                if any(
                    math.isclose(r["gsd_m"], gsd) and math.isclose(r["target_m"], target)
                    for r in rows
                ):
                    continue
                started = time.perf_counter()
                mode: str | float = "off" if target == gsd else float(target)
                miou = score(image, labels, folder / "out", model, mode)
                rows.append({"gsd_m": gsd, "target_m": target, "miou": miou})
                seconds = round(time.perf_counter() - started, 1)
                print(json.dumps({"model": model, **rows[-1], "s": seconds}), flush=True)
                args.results.write_text(json.dumps(results, indent=1) + "\n")
    return results


def _table(rows: list[dict[str, Any]]) -> dict[float, dict[float, float]]:
    table: dict[float, dict[float, float]] = {}
    for r in rows:
        table.setdefault(r["gsd_m"], {})[r["target_m"]] = r["miou"]
    return table


def _contiguous(
    gsds: list[float], ok: dict[float, bool], around: float
) -> tuple[float, float] | None:
    """The run of consecutive ``ok`` GSDs nearest ``around`` (log scale)."""
    start = min(gsds, key=lambda g: abs(math.log(g / around)))
    if not ok[start]:
        candidates = [g for g in gsds if ok[g]]
        if not candidates:
            return None
        start = min(candidates, key=lambda g: abs(math.log(g / around)))
    i = j = gsds.index(start)
    while i > 0 and ok[gsds[i - 1]]:
        i -= 1
    while j < len(gsds) - 1 and ok[gsds[j + 1]]:
        j += 1
    return gsds[i], gsds[j]


def derive(
    rows: list[dict[str, Any]],
    model_gsd: float,
    heldout_miou: float,
    args: argparse.Namespace,
    auto_run: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The policy and ranges for one model's sweep rows (``auto_run``: auto's measured
    scores by GSD; else those the sweep gives for the policy's targets)."""
    table = _table(rows)
    gsds = sorted(table)
    best = {g: max(table[g].values()) for g in gsds}
    off_ok = {g: table[g][g] >= best[g] - args.tolerance for g in gsds}
    finest, coarsest = _contiguous(gsds, off_ok, model_gsd) or (model_gsd, model_gsd)

    def expected(g: float, target: float) -> float:
        # The score at the measured target nearest this one (log scale).
        target = effective_target(g, target)
        return table[g][min(table[g], key=lambda t: abs(math.log(t / target)))]

    def shortfall(policy: ScalePolicy, outside: list[float]) -> float:
        return round(max((best[g] - expected(g, policy.target(g)) for g in outside), default=0), 3)

    finer = [g for g in gsds if g < finest]
    coarser = [g for g in gsds if g > coarsest]
    targets = [t / 100 for t in TARGETS_CM]
    finer_target = finest
    if finer:
        finer_target = min(
            targets, key=lambda t: (shortfall(ScalePolicy(finest, coarsest, t, 1.0), finer), -t)
        )
    # The coarser side: the finest target and the enlargement factor whose worst
    # shortfall from the best is least; the smaller factor (less work) on ties.
    floor, factor = coarsest, MAX_UPSAMPLE
    if coarser:
        floor, factor = min(
            ((t, f) for t in targets for f in (*FACTORS, MAX_UPSAMPLE)),
            key=lambda c: (
                shortfall(ScalePolicy(finest, coarsest, finer_target, *c), coarser),
                c[1],
                -c[0],
            ),
        )
    policy = ScalePolicy(finest, coarsest, finer_target, floor, factor)
    auto = {g: expected(g, policy.target(g)) for g in gsds}
    if auto_run:
        auto = {g: auto_run.get(str(g), auto[g]) for g in gsds}
    holds = _contiguous(gsds, {g: auto[g] >= heldout_miou - args.holds for g in gsds}, model_gsd)
    usable = _contiguous(gsds, {g: auto[g] >= heldout_miou - args.usable for g in gsds}, model_gsd)
    assert holds is not None and usable is not None
    return {
        "policy": {
            "finest_m": finest,
            "coarsest_m": coarsest,
            "finer_target_m": policy.finer_target_m,
            "coarser_target_m": policy.coarser_target_m,
            "coarser_factor": policy.coarser_factor,
        },
        "range": {
            "holds_from_m": holds[0],
            "holds_to_m": holds[1],
            "usable_from_m": usable[0],
            "usable_to_m": usable[1],
        },
        "measured": {
            "script": "scripts/scale_sweep.py",
            "scene": {"seed": args.seed, "ground_m": args.ground, "row_angle_deg": args.angle},
            "criteria": {
                "tolerance": args.tolerance,
                "holds": args.holds,
                "usable": args.usable,
                "heldout_miou": heldout_miou,
            },
            "miou": {
                str(g): {
                    "off": table[g][g],
                    "best": best[g],
                    "best_target_m": max(table[g], key=table[g].__getitem__),
                    "auto_target_m": effective_target(g, policy.target(g)),
                    "auto": auto[g],
                }
                for g in gsds
            },
        },
    }


def print_tables(derived: dict[str, dict[str, Any]]) -> None:
    """The sweep as Markdown tables, one per model."""
    for model, d in derived.items():
        print(f"\n### {model}\n")
        print("| input GSD | off | best (target) | auto target | auto | auto - best |")
        print("|---|---|---|---|---|---|")
        for g, m in d["measured"]["miou"].items():
            gsd = float(g)
            best_t, auto_t = m["best_target_m"], m["auto_target_m"]
            print(
                f"| {100 * gsd:g} cm | {m['off']:.3f} | {m['best']:.3f} "
                f"({'as it is' if best_t == gsd else f'{100 * best_t:g} cm'}) | "
                f"{'as it is' if auto_t == gsd else f'{100 * auto_t:.3g} cm'} | "
                f"{m['auto']:.3f} | {m['auto'] - m['best']:+.3f} |"
            )
        print(f"\npolicy {d['policy']}\nrange {d['range']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground", type=float, default=10.24, help="field edge in metres")
    parser.add_argument("--seed", type=int, default=10003, help="seed of the field")
    parser.add_argument("--angle", type=float, default=70.0, help="row direction, degrees")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--tolerance", type=float, default=0.02, help="as it is: within this of the best"
    )
    parser.add_argument(
        "--holds", type=float, default=0.05, help="holds up: auto within this of held-out mIoU"
    )
    parser.add_argument(
        "--usable", type=float, default=0.2, help="usable: auto within this of held-out mIoU"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep renderings here")
    parser.add_argument("--results", type=Path, default=Path("build/scale_sweep.json"))
    parser.add_argument(
        "--from-results", action="store_true", help="derive from --results, no runs"
    )
    parser.add_argument("--install", action="store_true", help="store with the models, check auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agriseg-sweep-") as tmp:
        folder = args.work_dir or Path(tmp)
        results = json.loads(args.results.read_text()) if args.results.exists() else {}
        if not args.from_results:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            results = sweep(folder, args, results)
        derived = {}
        for model in args.models:
            weights, meta = find_model(ALIASES.get(model, model))
            heldout = meta.metrics["heldout_pooled"]["miou"]
            rows = results["models"][model]
            derived[model] = derive(rows, meta.gsd_m or 0.02, heldout, args)
            if not args.install:
                continue
            update_calibration(weights, "scale", derived[model])
            auto_run = {}
            for g in GSDS_CM:
                image, labels = render(folder, g / 100, args.ground, args.seed, args.angle)
                auto_run[str(g / 100)] = score(image, labels, folder / "out", model, "auto")
                print(
                    json.dumps({"model": model, "gsd_m": g / 100, "auto": auto_run[str(g / 100)]}),
                    flush=True,
                )
            derived[model] = derive(rows, meta.gsd_m or 0.02, heldout, args, auto_run)
            update_calibration(weights, "scale", derived[model])
    print_tables(derived)


if __name__ == "__main__":
    main()

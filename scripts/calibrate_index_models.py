"""Set the reliability thresholds of the models without a network (``vegetation`` and
``rows``) from their own evidence on surveys they should trust and ones they should
not, and record them (and the verdicts they give) in their calibration.

Trusted: 20 generated row-crop surveys at 1.5-4 cm GSD from the held-out seeds
30001-30020 (the cases of ``scripts/calibrate_reliability.py``). Not trusted: the
same kind of field with plants scattered, not in rows (``layout="scattered"``, seeds
30001-30005; the ``rows`` model cannot split crop from weed there), and grey and grey
low-light copies of the trusted surveys (no colour to separate plants from soil);
low-light copies (colour kept, 30% brightness) are run and reported, but an index of
ratios should hold up there, so they set nothing. Each case is run once through the
real pipeline; the evidence each run reports (``summary["vegetation_index"]``,
``summary["rows"]``) is kept in ``--results`` (JSON lines, resumed when rerun),
and thresholds are derived from it:

* ``index_gap``: ``doubtful_gap`` lies ``--margin`` (relative) below the worst trusted
  separation; ``unreliable_gap`` halfway from there to the median separation of
  the grey copies, and at least ``--margin`` further down;
* ``chroma`` (colour index): the same rule for the image's colour, towards the grey
  copies' (none);
* ``rows`` (the ``rows`` model): ``doubtful_found_share`` and ``doubtful_regularity``
  lie ``--margin`` below the worst trusted survey's.

Usage::

    .venv/bin/python scripts/calibrate_index_models.py --install > build/calibrate_index.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from agriseg.health.verdict import Check, judge
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.models.registry import find_model
from agriseg.reliability import check_chroma, check_index_gap, check_rows
from agriseg.segmentation.calibration import update_calibration

sys.path.insert(0, str(Path(__file__).parent))
from calibrate_reliability import (  # noqa: E402
    IN_DOMAIN_SEEDS,
    SIZE,
    Case,
    _in_domain_gsd,
    _write_like,
    in_domain_cases,
    run_cases,
)

MODELS = ("vegetation", "rows")
SCATTERED_SEEDS = range(30001, 30006)
#: The GSDs each model is stated to work over: an index is a per-pixel ratio with the
#: image's own threshold, good from close-ups to 10 m satellite pixels; the row finder
#: needs rows a few pixels apart (0.3-1 m spacing: 10 cm pixels and finer).
#: Measured: 1.5-4 cm (the trusted surveys); the rest follows from the method.
SCALE_RANGES = {
    "vegetation": {
        "holds_from_m": 0.001,
        "holds_to_m": 10.0,
        "usable_from_m": 0.0005,
        "usable_to_m": 30.0,
    },
    "rows": {
        "holds_from_m": 0.002,
        "holds_to_m": 0.1,
        "usable_from_m": 0.001,
        "usable_to_m": 0.2,
    },
}
CHECKS_USED = {
    "vegetation": ["scale", "input", "index_gap", "chroma"],
    "rows": ["scale", "input", "index_gap", "chroma", "rows"],
}
DEGRADED = ("grey", "lowlight", "grey-lowlight")
#: The copies without colour: the ones an index should not be trusted on (low light
#: keeps the colours' ratios, so the index still works there).
COLOURLESS = ("grey", "grey-lowlight")


def make_cases(folder: Path) -> list[Case]:
    cases = in_domain_cases(folder)
    for seed in SCATTERED_SEEDS:
        path = folder / f"scattered_{seed}.tif"
        if not path.exists():
            params = draw_params(seed, SIZE, SIZE, gsd_m=_in_domain_gsd(seed), layout="scattered")
            write_survey(generate_survey(params, seed), folder, path.stem)
        cases.append(Case(path.stem, "scattered", path))
    for seed in IN_DOMAIN_SEEDS:
        src = folder / f"indomain_{seed}.tif"
        with rasterio.open(src) as opened:
            rgb = opened.read().astype("float32")
        grey = np.repeat((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None], 3, axis=0)
        for kind, data in zip(DEGRADED, (grey, rgb * 0.3, grey * 0.3), strict=True):
            path = folder / f"{kind}_{seed}.tif"
            if not path.exists():
                _write_like(src, path, np.clip(data, 0, 255).astype("uint8"))
            cases.append(Case(path.stem, kind, path))
    return cases


def _values(rows: list[dict[str, Any]], section: str, key: str) -> list[float]:
    values = [(r.get(section) or {}).get(key) for r in rows]
    return [float(v) for v in values if v is not None]


def derive(rows: list[dict[str, Any]], model: str, margin: float) -> dict[str, dict[str, float]]:
    """Thresholds of the model's own checks (see the module doc)."""
    inside = [r for r in rows if r["group"] == "in-domain"]
    colourless = [r for r in rows if r["group"] in COLOURLESS]
    doubtful = min(_values(inside, "vegetation_index", "gap")) * (1 - margin)
    far = statistics.median(_values(colourless, "vegetation_index", "gap") or [0.0])
    dull = min(_values(inside, "vegetation_index", "chroma")) * (1 - margin)
    grey = statistics.median(_values(colourless, "vegetation_index", "chroma") or [0.0])
    limits = {
        "index_gap": {
            "doubtful_gap": round(doubtful, 3),
            "unreliable_gap": round(min((doubtful + far) / 2, doubtful * (1 - margin)), 3),
        },
        "chroma": {
            "doubtful_chroma": round(dull, 3),
            "unreliable_chroma": round(min((dull + grey) / 2, dull * (1 - margin)), 3),
        },
    }
    if model == "rows":
        limits["rows"] = {
            "doubtful_found_share": round(
                min(_values(inside, "rows", "found_share")) * (1 - margin), 3
            ),
            "doubtful_regularity": round(
                min(_values(inside, "rows", "regularity")) * (1 - margin), 3
            ),
        }
    return limits


def rejudge(row: dict[str, Any], limits: dict[str, dict[str, float]]) -> str:
    """The verdict of a recorded run under ``limits`` (its own evidence checks only:
    the input and scale checks do not change with the thresholds)."""
    recorded = row["reliability"]["checks"]
    checks = [
        Check(name, c["level"], c.get("reason"))
        for name, c in recorded.items()
        if name in ("scale", "input")
    ]
    checks.append(check_index_gap(row["vegetation_index"], limits["index_gap"]))
    checks.append(check_chroma(row["vegetation_index"], limits["chroma"]))
    if "rows" in limits:
        checks.append(check_rows(row["rows"], limits["rows"]))
    return judge(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--results", type=Path, default=Path("build/index_reliability_runs.jsonl"))
    parser.add_argument("--work-dir", type=Path, default=Path("build/reliability_cases"))
    parser.add_argument("--margin", type=float, default=0.25)
    parser.add_argument("--from-results", action="store_true", help="derive only, no runs")
    parser.add_argument("--install", action="store_true", help="store with the models")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    cases = make_cases(args.work_dir)
    if not args.from_results:
        with tempfile.TemporaryDirectory(prefix="agriseg-calibrate-") as tmp:
            for model in args.models:
                run_cases(cases, model, args.results, Path(tmp), ("vegetation_index", "rows"))
    rows = [json.loads(line) for line in args.results.read_text().splitlines()]
    for model in args.models:
        weights, _ = find_model(model)
        mine = [r for r in rows if r["model"] == model]
        limits = derive(mine, model, args.margin)
        verdicts: dict[str, Counter[str]] = defaultdict(Counter)
        ranges: dict[str, dict[str, list[float]]] = defaultdict(dict)
        for r in mine:
            verdicts[r["group"]][rejudge(r, limits)] += 1
        for group in {r["group"] for r in mine}:
            these = [r for r in mine if r["group"] == group]
            for section, key in (
                ("vegetation_index", "gap"),
                ("vegetation_index", "chroma"),
                ("rows", "found_share"),
                ("rows", "regularity"),
            ):
                values = _values(these, section, key)
                if values:
                    ranges[group][key] = [round(min(values), 3), round(max(values), 3)]
        rates = {g: dict(c) for g, c in verdicts.items()}
        print(f"\n### {model}\n\n| cases | n | ok | doubtful | unreliable | ranges |")
        print("|---|---|---|---|---|---|")
        for group, counts in rates.items():
            n = sum(counts.values())
            print(
                f"| {group} | {n} | "
                + " | ".join(str(counts.get(v, 0)) for v in ("ok", "doubtful", "unreliable"))
                + f" | {ranges[group]} |"
            )
        print(json.dumps(limits, indent=1))
        if args.install:
            update_calibration(weights, "checks", limits)
            update_calibration(weights, "checks_used", CHECKS_USED[model])
            update_calibration(weights, "scale", {"range": SCALE_RANGES[model], "any_gsd": True})
            update_calibration(
                weights,
                "checks_measured",
                {
                    "script": "scripts/calibrate_index_models.py",
                    "margin": args.margin,
                    "verdicts": rates,
                    "ranges": ranges,
                },
            )


if __name__ == "__main__":
    main()

"""Plant counts against the generator's truth on three held-out surveys.

Generates three surveys of different GSD and row direction from seeds never used for
training (the shipped models trained on seeds 1-40 and were scored on 10001-10006),
segments each with the shipped default model (``agriseg run --engine onnx --plants``),
and compares the plants counted with the plants the generator drew
(``<stem>.plants.gpkg``): count error and plants/m² error, for the model's class raster
and, to separate the counting from the segmentation, for the truth class raster.

Usage::

    .venv/bin/python scripts/plant_count_benchmark.py [--size 1536] [--work-dir DIR]
        [--survey SEED,GSD_M,ANGLE ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyogrio
from agriseg_cli.main import main as agriseg

from agriseg.field.plants import count_plants
from agriseg.learning.synthetic import draw_params, generate_survey, write_survey

#: Held-out surveys: (seed, gsd_m, row_angle_deg).
SURVEYS = ((20011, 0.012, 15.0), (20012, 0.024, 80.0), (20013, 0.036, 135.0))


def error(found: float, truth: float) -> float:
    return 100 * (found - truth) / truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536, help="survey edge in pixels")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the surveys here")
    parser.add_argument(
        "--survey",
        action="append",
        default=None,
        metavar="SEED,GSD_M,ANGLE",
        help="survey to draw instead of the three held-out ones (repeatable)",
    )
    args = parser.parse_args()
    surveys = (
        [tuple(float(x) for x in text.split(",")) for text in args.survey]
        if args.survey
        else SURVEYS
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="agriseg-plants-") as tmp:
        folder = args.work_dir or Path(tmp)
        for seed_value, gsd, angle in surveys:
            seed = int(seed_value)
            params = draw_params(seed, args.size, args.size, gsd_m=gsd, row_angle_deg=angle)
            paths = write_survey(generate_survey(params, seed), folder, f"plants_{seed}")
            truth = len(pyogrio.read_dataframe(paths.plants, layer="plants"))
            area = (args.size * gsd) ** 2
            out = folder / f"plants_{seed}_out"
            started = time.perf_counter()
            command = ["run", str(paths.image), "--out", str(out), "--engine", "onnx", "--plants"]
            assert agriseg([*command, "--quiet"]) == 0
            seconds = time.perf_counter() - started
            counted = json.loads((out / f"{paths.image.stem}.plants.json").read_text())
            on_truth = count_plants(paths.labels)
            row = {
                "seed": seed,
                "gsd_cm": 100 * gsd,
                "angle": angle,
                "row_spacing_m": round(params.row_spacing_m, 3),
                "plant_spacing_m": round(params.plant_spacing_m, 3),
                "plant_spacing_px": round(params.plant_spacing_m / gsd, 1),
                "truth": truth,
                "truth_per_m2": round(truth / area, 3),
                "model": counted["plants"],
                "model_per_m2": counted["plants_per_m2"],
                "model_error_pct": round(error(counted["plants"], truth), 2),
                "model_per_m2_error_pct": round(error(counted["plants_per_m2"], truth / area), 2),
                "truth_raster": len(on_truth.plants),
                "truth_raster_error_pct": round(error(len(on_truth.plants), truth), 2),
                "run_and_count_s": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        "| survey (seed) | GSD | rows | row / plant spacing | plants (truth) | counted | "
        "error | plants/m² truth / counted | error | on the truth raster |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['gsd_cm']:.1f} cm | {r['angle']:.0f}° | "
            f"{r['row_spacing_m']:.2f} / {r['plant_spacing_m']:.2f} m "
            f"({r['plant_spacing_px']:.1f} px) | {r['truth']} | {r['model']} | "
            f"{r['model_error_pct']:+.1f} % | {r['truth_per_m2']:.2f} / {r['model_per_m2']:.2f} | "
            f"{r['model_per_m2_error_pct']:+.1f} % | {r['truth_raster_error_pct']:+.1f} % |"
        )


if __name__ == "__main__":
    main()

"""Accuracy and model time of ``--resample auto`` against ``off`` across ground sampling distances.

Renders one generated field (same seed, same parameters, same ground) at several
GSDs, segments each rendering with the default model with ``--resample auto`` and
``off``, scores it against its own truth labels, and prints a Markdown table of mIoU
and model-only (forward pass) seconds, as summed in each run's ``timings_s.infer``.

Usage::

    .venv/bin/python scripts/gsd_benchmark.py [--ground 20.48] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from agriseg.config import RunConfig
from agriseg.evaluation import evaluate_raster
from agriseg.synthetic import draw_params, generate_survey, write_survey

SEED = 10003
ROW_ANGLE_DEG = 70.0
GSDS_M = (0.007, 0.02, 0.05)
MODES = ("off", "auto")


def render(folder: Path, gsd_m: float, ground_m: float) -> tuple[Path, Path]:
    """Write the field at ``gsd_m``; returns the image and its truth labels."""
    edge = round(ground_m / gsd_m)
    params = draw_params(SEED, edge, edge, gsd_m=gsd_m, row_angle_deg=ROW_ANGLE_DEG)
    paths = write_survey(generate_survey(params, SEED), folder, f"field_{1000 * gsd_m:g}mm")
    return paths.image, paths.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground", type=float, default=20.48, help="field edge in metres")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep renderings here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agriseg-gsd-") as tmp:
        folder = args.work_dir or Path(tmp)
        rows = []
        for gsd in GSDS_M:
            image, labels = render(folder, gsd, args.ground)
            for mode in MODES:
                config = RunConfig(device="cpu", resample=mode)
                out = folder / f"{image.stem}_{mode}"
                result = evaluate_raster(image, labels, out, config)
                summary = result.summary
                rows.append(
                    {
                        "gsd_cm": 100 * gsd,
                        "pixels": summary["input"]["width"] * summary["input"]["height"],
                        "mode": mode,
                        "miou": round(result.scores.miou, 3),
                        "tiles": summary["tiles"],
                        "model_s": summary["timings_s"]["infer"],
                        "total_s": summary["timings_s"]["total"],
                        "scale": summary["scale"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| GSD | pixels | mode | tiles (input px) | mIoU | model s | run s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['gsd_cm']:.1f} cm | {r['pixels'] / 1e6:.2f} Mpx | {r['mode']} | "
            f"{r['tiles']} ({r['scale']['input_tile_px']}) | {r['miou']:.3f} | "
            f"{r['model_s']:.1f} | {r['total_s']:.1f} |"
        )
    fine = {r["mode"]: r["model_s"] for r in rows if r["gsd_cm"] == 100 * GSDS_M[0]}
    print(f"\nmodel-only time at {100 * GSDS_M[0]:.1f} cm, auto / off: ", end="")
    print(f"{fine['auto'] / fine['off']:.3f}")


if __name__ == "__main__":
    main()

"""Accuracy and model time of ``--resample auto`` against ``off`` across ground sampling distances.

Renders one generated field (same seed, same parameters, same ground) at several
GSDs, segments each rendering with the default model with ``--resample auto`` and
``off``, scores it against its own truth labels, and prints a Markdown table of mIoU
and device seconds (each run's ``timings_s.infer``: forwards and resizing), then times the model
alone at the finest GSD with ``auto`` and ``off`` as ``agriseg bench`` does.

Usage::

    .venv/bin/python scripts/gsd_benchmark.py [--seed 10003] [--angle 70] [--ground 20.48]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agriseg.bench import model_only_seconds
from agriseg.config import RunConfig
from agriseg.learning.evaluation import evaluate_raster
from agriseg.learning.synthetic import draw_params, generate_survey, write_survey

GSDS_M = (0.007, 0.02, 0.05)
MODES = ("off", "auto")


def render(
    folder: Path, gsd_m: float, ground_m: float, seed: int, angle_deg: float
) -> tuple[Path, Path]:
    """Write the field at ``gsd_m``; returns the image and its truth labels."""
    edge = round(ground_m / gsd_m)
    params = draw_params(seed, edge, edge, gsd_m=gsd_m, row_angle_deg=angle_deg)
    paths = write_survey(generate_survey(params, seed), folder, f"field_{1000 * gsd_m:g}mm")
    return paths.image, paths.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground", type=float, default=20.48, help="field edge in metres")
    parser.add_argument("--seed", type=int, default=10003, help="seed of the field")
    parser.add_argument("--angle", type=float, default=70.0, help="row direction, degrees")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep renderings here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agriseg-gsd-") as tmp:
        folder = args.work_dir or Path(tmp)
        rows = []
        fine_image = folder
        for gsd in GSDS_M:
            image, labels = render(folder, gsd, args.ground, args.seed, args.angle)
            if gsd == GSDS_M[0]:
                fine_image = image
            for mode in MODES:
                config = RunConfig(device="cpu", resample=mode)
                out = folder / f"{image.stem}_{mode}"
                result = evaluate_raster(image, labels, out, config)
                summary = result.summary
                rows.append(
                    {
                        "gsd_cm": round(100 * gsd, 2),
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
    print("| GSD | pixels | mode | tiles (input px) | mIoU | device s | run s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['gsd_cm']:.1f} cm | {r['pixels'] / 1e6:.2f} Mpx | {r['mode']} | "
            f"{r['tiles']} ({r['scale']['input_tile_px']}) | {r['miou']:.3f} | "
            f"{r['model_s']:.1f} | {r['total_s']:.1f} |"
        )
    fine = {r["mode"]: r["model_s"] for r in rows if r["gsd_cm"] == round(100 * GSDS_M[0], 2)}
    print(f"\nat {100 * GSDS_M[0]:.1f} cm, auto / off: device seconds in the runs ", end="")
    print(f"{fine['auto'] / fine['off']:.3f}", end="")
    # The runs' sums suffer from anything else on the machine; the model alone, the
    # best of a few passes over the same tiles, alternating modes, is steadier.
    alone = dict.fromkeys(MODES, float("inf"))
    with ThreadPoolExecutor(max_workers=1) as pool:  # forwards on a worker thread, as in a run
        for _ in range(2):
            for mode in MODES:
                config = RunConfig(device="cpu", resample=mode)
                setups = pool.submit(model_only_seconds, fine_image, config).result()
                alone[mode] = min(alone[mode], *setups.values())
    print(f", model alone {alone['auto']:.2f} / {alone['off']:.2f} s = ", end="")
    print(f"{alone['auto'] / alone['off']:.3f}")


if __name__ == "__main__":
    main()

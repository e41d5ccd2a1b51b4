"""Self-training on a survey's own rows against ``--model rows`` on that survey.

For each survey of ``scripts/labelfree_benchmark.py`` named by ``--surveys`` (indexes
0-9: seeds 30001-30010), labels it by its own rows (``agriseg train --labels rows``:
:func:`agriseg.learning.row_labels.label_with_rows`), fine-tunes the shipped network
on those labels (``--from default``), runs the result on the same survey and scores
weed, crop and soil IoU of both against the survey's truth (diseased plants as crop).
No truth label is used for training. Prints one JSON line per survey.

Usage::

    .venv/bin/python scripts/selftrain_benchmark.py --out /tmp/selftrain --surveys 4 7 \\
        [--epochs 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
from labelfree_benchmark import iou, run_model, survey_params

from agriseg.learning.datasets import pair_files
from agriseg.learning.row_labels import label_classes_for, label_with_rows
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import CROP, DISEASED, SOIL, WEED, draw_params, generate_survey
from agriseg.learning.training import TrainConfig, train_files
from agriseg.models.registry import find_model


def scores(truth: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    return {
        name: round(iou(truth == label, classes == label), 4)
        for name, label in (("soil", SOIL), ("crop", CROP), ("weed", WEED))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--surveys", type=int, nargs="+", default=[4])
    parser.add_argument("--n", type=int, default=10, help="surveys in the labelfree benchmark")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--balance", type=float, default=TrainConfig.balance)
    parser.add_argument("--scratch", action="store_true", help="train from scratch")
    args = parser.parse_args()
    for k in args.surveys:
        seed, overrides = survey_params(k, args.n, args.size)
        folder = args.out / f"s{seed}"
        params = draw_params(seed, args.size, args.size, **overrides)
        paths = write_survey(generate_survey(params, seed), folder, f"s{seed}")
        with rasterio.open(paths.labels) as src:
            truth = src.read(1)
        truth = np.where(truth == DISEASED, CROP, truth)
        rows, _, _ = run_model(paths.image, folder / "rows", "rows")
        # What `agriseg train SURVEY --labels rows [--from default]` does.
        base = None if args.scratch else find_model("default")[1].classes
        target = label_classes_for(base)
        labels = label_with_rows([paths.image], folder / "row-labels", target)
        config = replace(
            TrainConfig(
                init=None if args.scratch else "default",
                learning_rate=args.lr,
                balance=args.balance,
                device="cpu",
                seed=seed,
            ),
            classes=target,
            keep_classes=target == base,
            vegetation_mask="index",
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            chips_per_step=4,
        )
        result = train_files(pair_files([paths.image], labels), folder / "net", config)
        net, _, _ = run_model(paths.image, folder / "net-run", str(result.weights))
        net = np.where(net == DISEASED, CROP, net)  # a network that kept the class
        with rasterio.open(labels[0]) as src:
            labelled = float((src.read(1) != 255).mean())
        record = {
            "seed": seed,
            "labelled_share": round(labelled, 4),
            "rows": scores(truth, rows),
            "self_trained": scores(truth, net),
            "epochs": args.epochs,
            "steps": args.steps,
            "lr": args.lr,
            "balance": args.balance,
            "from": "scratch" if args.scratch else "default",
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""Train, evaluate and install agriseg's shipped default models, reproducibly.

    make models            # both models (about an hour on 2 CPU cores)
    .venv/bin/python scripts/train_default.py unet --install

Training data: synthetic surveys drawn in memory from seeds 1..N_TRAIN
(:func:`agriseg.synthetic.draw_params`); evaluation: surveys from seeds 10001+
with fixed ground sampling distances and row angles, written to build/heldout and
scored by ``agriseg evaluate``. No evaluation seed is ever used for training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agriseg.evaluation import scores
from agriseg.models import load_model, save_checkpoint, shipped_dir
from agriseg.synthetic import draw_params, generate_survey, write_survey
from agriseg.training import EpochResult, Scene, TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN = 40
TRAIN_SIZE = 768
#: Held-out surveys: (seed, gsd_m, row_angle_deg), 1024 px square.
HELDOUT = (
    (10001, 0.012, 0.0),
    (10002, 0.018, 35.0),
    (10003, 0.024, 70.0),
    (10004, 0.030, 105.0),
    (10005, 0.036, 140.0),
    (10006, 0.020, 160.0),
)
MODELS = {
    "unet": {
        "architecture": "unet",
        "arch_params": {"decoder_channels": [128, 64, 32, 16, 16]},
        "description": "U-Net / MobileNetV2 field-health segmentation (default model)",
    },
    "pspnet": {
        "architecture": "pspnet",
        "arch_params": {},
        "description": "PSPNet / MobileNetV2 field-health segmentation (faster, coarser)",
    },
}


def training_scenes() -> list[Scene]:
    scenes = []
    for seed in range(1, N_TRAIN + 1):
        survey = generate_survey(draw_params(seed, TRAIN_SIZE, TRAIN_SIZE), seed)
        scenes.append(
            Scene(
                survey.image.astype("float32"),
                survey.labels,
                "uint8",
                survey.params.gsd_m,
                f"synthetic seed {seed}",
            )
        )
    return scenes


def write_heldout(folder: Path) -> list[Path]:
    images = []
    for seed, gsd, angle in HELDOUT:
        stem = f"heldout_{seed}"
        image = folder / f"{stem}.tif"
        if not image.exists():
            params = draw_params(seed, 1024, 1024, gsd_m=gsd, row_angle_deg=angle)
            write_survey(generate_survey(params, seed), folder, stem)
        images.append(image)
    return images


def evaluate(model: str, images: list[Path], folder: Path) -> dict:
    """Run ``agriseg evaluate`` on every held-out survey; pool the confusion matrices."""
    per_survey = {}
    total = None
    for image in images:
        report = folder / f"{image.stem}.{Path(model).name}.json"
        subprocess.run(
            [
                str(Path(sys.executable).with_name("agriseg")),
                "evaluate",
                str(image),
                "--labels",
                str(image.with_suffix(".labels.gpkg")),
                "--model",
                model,
                "--device",
                "cpu",
                "--out",
                str(folder / f"{image.stem}_{Path(model).name}"),
                "--json",
                str(report),
                "--quiet",
            ],
            check=True,
        )
        found = json.loads(report.read_text())
        per_survey[image.stem] = {
            "miou": found["miou"],
            "iou": {k: v["iou"] for k, v in found["classes"].items()},
        }
        cm = np.array(found["confusion_matrix"]["counts"])
        total = cm if total is None else total + cm
    pooled = scores(total).to_dict()
    return {"heldout_pooled": pooled, "heldout_per_survey": per_survey}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--install", action="store_true", help="evaluate and copy into agriseg/weights (fp16)"
    )
    parser.add_argument(
        "--install-only", action="store_true", help="skip training; install build checkpoints"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heldout = write_heldout(args.build / "heldout")
    scenes = None if args.install_only else training_scenes()
    for key in args.models:
        spec = MODELS[key]
        out = args.build / "models" / f"agriseg-{key}"
        command = "make models  # scripts/train_default.py " + " ".join(sys.argv[1:])
        if scenes is not None:
            config = TrainConfig(
                architecture=spec["architecture"],
                encoder="mobilenet_v2",
                arch_params=spec["arch_params"],
                chip_size=args.chip_size,
                batch_size=args.batch_size,
                epochs=args.epochs,
                steps_per_epoch=args.steps,
                val_fraction=0.1,
                device="cpu",
                seed=0,
                resume=args.resume,
                description=spec["description"],
                command=command,
            )
            started = time.time()

            def report(result: EpochResult, started: float = started, key: str = key) -> None:
                v = result.to_dict()
                print(
                    f"[{key}] epoch {result.epoch}/{result.epochs} loss {result.loss:.4f} "
                    f"val mIoU {v.get('val_miou')} iou {v.get('val_iou')} "
                    f"({time.time() - started:.0f}s)",
                    flush=True,
                )

            train(scenes, out, config, on_epoch=report)
        if args.install or args.install_only:
            model, meta = load_model(out)
            target = shipped_dir() / f"agriseg-{key}"
            save_checkpoint(model, meta, target, half=True)
            metrics = {**meta.metrics, **evaluate(f"agriseg-{key}", heldout, args.build / "eval")}
            meta = dataclasses.replace(meta, metrics=metrics)
            save_checkpoint(model, meta, target, half=True)
            pooled = metrics["heldout_pooled"]
            print(f"[{key}] installed; held-out: {json.dumps(pooled['classes'])}")
            print(f"[{key}] held-out mIoU {metrics['heldout_pooled']['miou']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

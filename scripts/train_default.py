"""Train, evaluate and install agriseg's shipped default models, reproducibly.

    make models            # both models (about an hour on 2 CPU cores)
    .venv/bin/python scripts/train_default.py unet --install

Training data: synthetic surveys drawn in memory from seeds 1..N_TRAIN
(:func:`agriseg.learning.synthetic.draw_params`); evaluation: surveys from seeds 10001+
with fixed ground sampling distances and row angles, written to build/heldout and
scored by ``agriseg evaluate``. No evaluation seed is ever used for training.

Installing a model (and ``--export-onnx`` alone) also writes its ONNX files: fp32
``NAME.onnx`` exported from the shipped weights, and ``NAME.int8.onnx`` quantised
from it (ONNX Runtime static QDQ quantisation, per channel, calibrated on tiles of
generated surveys from seeds 20001+, never the held-out ones), which ships only when
its held-out mIoU is within :data:`INT8_MAX_MIOU_DROP` of fp32's and its forward is
faster; the comparison goes to build/onnx/int8.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from agriseg.classes import CLASS_NAMES, DEFAULT_CLASSES
from agriseg.learning.metrics import scores
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.learning.training import EpochResult, Scene, TrainConfig, train
from agriseg.models.inference import OnnxForward, normalize
from agriseg.models.onnx_export import INT8_SUFFIX, export_onnx, label_onnx, save_onnx
from agriseg.models.onnx_format import read_onnx_meta
from agriseg.models.registry import (
    find_model,
    load_model,
    save_checkpoint,
    shipped_dir,
    shipped_models,
)

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
#: Calibration surveys for int8 quantisation: seeds far from training (1..N_TRAIN)
#: and held-out (10001+) ones, drawn like the training surveys.
CALIBRATION_SEEDS = range(20001, 20009)
CALIBRATION_SIZE = 1024
#: An int8 model may replace the fp32 one only within this much held-out mIoU.
INT8_MAX_MIOU_DROP = 0.01
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


def evaluate(
    model: str | Path, images: list[Path], folder: Path, options: tuple[str, ...] = ()
) -> dict:
    """Run ``agriseg evaluate`` (with ``options``) on every held-out survey; pool the
    confusion matrices."""
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
                str(model),
                # A shipped model's name means its fp32 weights here (the model card's
                # figures); ONNX files run as they are.
                "--precision",
                "fp32",
                "--device",
                "cpu",
                "--out",
                str(folder / f"{image.stem}_{Path(model).name}"),
                "--json",
                str(report),
                "--no-preview",
                "--format",
                "gpkg",
                "--quiet",
                *options,
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
    pooled = scores(total, DEFAULT_CLASSES).to_dict()
    return {"heldout_pooled": pooled, "heldout_per_survey": per_survey}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def model_card() -> str:
    """Markdown model card of the shipped models, from their metadata."""
    metas = {m.name: m for m in shipped_models()}
    lines = [
        "# agriseg shipped models",
        "",
        "| model | architecture | parameters | weights | held-out mIoU |",
        "|---|---|---|---|---|",
    ]
    for name, m in metas.items():
        size = (shipped_dir() / f"{name}.safetensors").stat().st_size / 2**20
        pooled = m.metrics.get("heldout_pooled", {})
        params = sum(p.numel() for p in load_model(name)[0].parameters())
        lines.append(
            f"| `{name}`{' (default)' if name == 'agriseg-unet' else ''} | "
            f"{m.architecture} / {m.encoder} | {params / 1e6:.2f} M | {size:.1f} MB fp16 | "
            f"{_pct(pooled.get('miou'))} |"
        )
    lines += [
        "",
        "**Classes** (id, name, role): 0 soil (background), 1 crop (crop), 2 weed (weed), "
        "3 diseased (disease: crop plants inside disease foci). Input: 8-bit RGB "
        "orthomosaics (red, green, blue found by name), normalised with the mean/std "
        "stored in each model's JSON; inference tiles of 512 px; trained GSD: the median "
        "of the training surveys' (2.92 cm).",
        "",
        "**Training data**: "
        f"{N_TRAIN} procedurally generated drone surveys of row crops, {TRAIN_SIZE} px "
        "square, drawn by `agriseg.learning.synthetic.draw_params(seed)` for seeds "
        f"1-{N_TRAIN}: GSD 1-4 cm, any row direction, row spacing 0.40-0.75 m, varied "
        "plant size, weeds, disease foci, lighting, white balance, blur and noise. "
        "Chips are class-balanced and augmented (flips, 90° rotations, colour jitter, "
        "scale jitter 0.7-1.4x). 10 % of each survey's blocks are held out for "
        "per-epoch validation.",
        "",
        "**Reproduce**: `make models` (seeded; CPU): both models 10 epochs x 100 steps "
        "of 8 chips of 224 px, then the U-Net resumed to 18 and to 24 epochs (each "
        "resume is a warm restart of the cosine schedule), then held-out evaluation "
        "and installation.",
        "",
        "## Measured on held-out surveys",
        "",
        "Six 1024 x 1024 px surveys from seeds 10001-10006 (never used in training), "
        "with GSD / row angle "
        + ", ".join(f"{100 * g:.1f} cm / {a:.0f}°" for _, g, a in HELDOUT)
        + ", scored with `agriseg evaluate` against their vector labels; confusion "
        "matrices pooled over the six surveys.",
        "",
        "| model | soil IoU | crop IoU | weed IoU | diseased IoU | mIoU | mean F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in metas.items():
        pooled = m.metrics.get("heldout_pooled", {})
        iou = [_pct(pooled.get("classes", {}).get(c, {}).get("iou")) for c in CLASS_NAMES]
        lines.append(
            f"| `{name}` | {' | '.join(iou)} | {_pct(pooled.get('miou'))} | "
            f"{_pct(pooled.get('mean_f1'))} |"
        )
    lines += ["", "Per survey (mIoU):", ""]
    lines.append("| survey | GSD | " + " | ".join(f"`{n}`" for n in metas) + " |")
    lines.append("|---|---|" + "---|" * len(metas))
    for seed, gsd, _ in HELDOUT:
        stem = f"heldout_{seed}"
        cells = [
            _pct(m.metrics.get("heldout_per_survey", {}).get(stem, {}).get("miou"))
            for m in metas.values()
        ]
        lines.append(f"| {stem} | {100 * gsd:.1f} cm | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Limits",
        "",
        "- Trained on synthetic imagery only. Real orthomosaics differ (crops, growth "
        "stages, soils, cameras, stitching artefacts): fine-tune on your own labels "
        "before production use, e.g. `agriseg train ortho.tif --labels labels.gpkg "
        "--from default --out my-model`, and check with `agriseg evaluate`.",
        "- Weeds are small (about 5 cm across): at coarse GSD (3-4 cm) and with blur "
        "they cover a few pixels and their IoU drops; fly lower for weed mapping.",
        "- `diseased` means visibly discoloured crop in patches, not a diagnosis.",
        "- PSPNet predicts at 1/8 resolution and blurs plant outlines; it is faster "
        "but clearly less accurate on small objects. Prefer the U-Net.",
        "",
    ]
    return "\n".join(lines)


def export_shipped_onnx(name: str) -> Path:
    """Export shipped model ``name`` to ``NAME.onnx`` beside it, from the shipped (fp16)
    weights as loaded, so that both engines run the same numbers; ONNX Runtime runs
    fp32 fastest on CPU here."""
    model, meta = load_model(name)
    out = export_onnx(model, meta, shipped_dir() / f"{name}.onnx")
    print(f"[{name}] exported {out} ({out.stat().st_size / 2**20:.1f} MB)", flush=True)
    return out


def calibration_tiles(name: str) -> Iterator[np.ndarray]:
    """Normalised model-size tiles of the calibration surveys, one batch of 4 at a time."""
    _, meta = find_model(name)
    edge = meta.tile_size
    for seed in CALIBRATION_SEEDS:
        params = draw_params(seed, CALIBRATION_SIZE, CALIBRATION_SIZE)
        image = generate_survey(params, seed).image[:3].astype("float32")
        x = normalize(image, "uint8", meta.normalization)
        corners = [(r, c) for r in range(0, CALIBRATION_SIZE, edge) for c in (0, edge)]
        yield np.stack([x[:, r : r + edge, c : c + edge] for r, c in corners[:4]])


def quantize_int8(name: str, fp32: Path, out: Path) -> Path:
    """Quantise the ONNX file ``fp32`` to int8 (QDQ, per channel, static, calibrated on
    :func:`calibration_tiles`), keeping agriseg's and Deepness's metadata."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_tiles(name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    out.parent.mkdir(parents=True, exist_ok=True)
    prepared = out.with_name(out.stem + ".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink()
    graph = onnx.load(str(out))
    _, meta = find_model(name)
    description = f"{meta.description} int8 (static QDQ quantisation, per channel)"
    meta = dataclasses.replace(meta, description=description)
    label_onnx(graph, meta, meta.tile_size)
    save_onnx(graph, out)
    print(f"[{name}] int8 {out} ({out.stat().st_size / 2**20:.1f} MB)", flush=True)
    return out


def model_seconds(path: Path, repeats: int = 5) -> float:
    """Best time of one forward of 4 tiles on one thread (a run's forward)."""
    meta = read_onnx_meta(path)
    forward = OnnxForward(meta, 1, path)
    tiles = next(calibration_tiles(meta.name))
    forward(tiles)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        forward(tiles)
        best = min(best, time.perf_counter() - began)
    return best


def install_int8(key: str, heldout: list[Path], build: Path) -> dict:
    """Quantise shipped model ``key``'s fp32 ONNX file to int8, compare held-out mIoU
    and forward time, and ship the int8 file only when it keeps mIoU within
    :data:`INT8_MAX_MIOU_DROP` and is faster."""
    name = f"agriseg-{key}"
    fp32 = shipped_dir() / f"{name}.onnx"
    int8 = quantize_int8(name, fp32, build / "onnx" / f"{name}{INT8_SUFFIX}")
    found: dict = {}
    for label, path in (("fp32", fp32), ("int8", int8)):
        metrics = evaluate(path, heldout, build / "eval-onnx" / label)
        found[label] = {
            "miou": metrics["heldout_pooled"]["miou"],
            "per_survey": {k: v["miou"] for k, v in metrics["heldout_per_survey"].items()},
            "forward_4_tiles_s": round(model_seconds(path), 3),
            "mb": round(path.stat().st_size / 2**20, 1),
        }
    found["miou_drop"] = round(found["fp32"]["miou"] - found["int8"]["miou"], 4)
    faster = found["int8"]["forward_4_tiles_s"] < found["fp32"]["forward_4_tiles_s"]
    found["shipped"] = found["miou_drop"] <= INT8_MAX_MIOU_DROP and faster
    target = shipped_dir() / int8.name
    if found["shipped"]:
        shutil.copyfile(int8, target)
    else:
        target.unlink(missing_ok=True)
    print(f"[{key}] {json.dumps(found)}", flush=True)
    return found


def export_all_onnx(keys: list[str], heldout: list[Path], build: Path) -> None:
    """Write every ONNX file the shipped models ``keys`` ship (see the module doc)."""
    results = {}
    for key in keys:
        export_shipped_onnx(f"agriseg-{key}")
        results[key] = install_int8(key, heldout, build)
    (build / "onnx" / "int8.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--chip-size", type=int, default=224)
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
    parser.add_argument(
        "--card", action="store_true", help="only rewrite MODEL_CARD.md from the shipped models"
    )
    parser.add_argument(
        "--export-onnx",
        action="store_true",
        help="only re-export the shipped models' ONNX files from their shipped weights "
        "(fp32, and int8 where it keeps held-out mIoU)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected any of {', '.join(MODELS)}")
    if args.card:
        (shipped_dir() / "MODEL_CARD.md").write_text(model_card(), encoding="utf-8")
        return 0
    if args.export_onnx:
        heldout = write_heldout(args.build / "heldout")
        export_all_onnx(args.models or list(MODELS), heldout, args.build)
        return 0
    torch.set_num_threads(args.threads)
    heldout = write_heldout(args.build / "heldout")
    scenes = None if args.install_only else training_scenes()
    for key in args.models or list(MODELS):
        spec = MODELS[key]
        out = args.build / "models" / f"agriseg-{key}"
        command = "make models  # scripts/train_default.py " + " ".join(sys.argv[1:])
        if scenes is not None:
            config = TrainConfig(
                architecture=spec["architecture"],
                encoder="mobilenet_v2",
                arch_params=spec["arch_params"],
                chip_size=args.chip_size,
                chips_per_step=args.batch_size,
                epochs=args.epochs,
                steps_per_epoch=args.steps,
                val_fraction=0.1,
                scale_jitter=(0.7, 1.4),  # the shipped models' recipe: GSD robustness
                precision="fp32",
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

            def steps(done: int, total: int, started: float = started, key: str = key) -> None:
                if done % 20 == 0:
                    elapsed = time.time() - started
                    print(f"[{key}] step {done}/{total} ({elapsed:.0f}s)", flush=True)

            train(scenes, out, config, progress=steps, on_epoch=report)
        if args.install or args.install_only:
            model, meta = load_model(out)
            target = shipped_dir() / f"agriseg-{key}"
            save_checkpoint(model, meta, target, half=True)
            metrics = {**meta.metrics, **evaluate(f"agriseg-{key}", heldout, args.build / "eval")}
            meta = dataclasses.replace(meta, metrics=metrics)
            save_checkpoint(model, meta, target, half=True)
            export_all_onnx([key], heldout, args.build)
            pooled = metrics["heldout_pooled"]
            print(f"[{key}] installed; held-out: {json.dumps(pooled['classes'])}")
            print(f"[{key}] held-out mIoU {metrics['heldout_pooled']['miou']}", flush=True)
    if args.install or args.install_only:
        (shipped_dir() / "MODEL_CARD.md").write_text(model_card(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

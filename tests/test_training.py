"""Training end to end on tiny synthetic surveys, on CPU, in a few steps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agriseg.errors import InputError, ModelError
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.learning.training import (
    VALIDATION_PIXELS,
    ChipSampler,
    Scene,
    TrainConfig,
    _Split,
    best_epoch,
    bf16_steps,
    held_out_images,
    state_path,
    train,
)
from agriseg.models.meta import Normalization
from agriseg.models.registry import load_model

TINY = {"chip_size": 64, "chips_per_step": 2, "steps_per_epoch": 2, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scene(seed: int = 1, size: int = 160, **overrides) -> Scene:
    survey = generate_survey(draw_params(seed, size, size, **overrides), seed)
    dtype = survey.image.dtype.name
    return Scene(survey.image.astype("float32"), survey.labels, dtype, survey.params.gsd_m, "s")


def test_train_vector_labels_then_run_and_evaluate(tmp_path: Path, run_cli) -> None:
    survey = generate_survey(draw_params(2, 160, 160), 2)
    paths = write_survey(survey, tmp_path, "field")
    out = tmp_path / "models" / "mine"
    args = ("--chip-size", "64", "--chips-per-step", "2", "--steps", "2", "--device", "cpu")
    code = run_cli(
        "train", paths.image, "--labels", paths.polygons, "--out", out, "--epochs", "1",
        "--threads", "1", "--quiet", *args,
    )  # fmt: skip
    assert code == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["name"] == "mine" and meta["architecture"] == "unet"
    assert set(meta["metrics"]["validation"]["classes"]) == {"soil", "crop", "weed", "diseased"}
    assert meta["training"]["command"].startswith("agriseg train")
    assert state_path(out).exists()
    assert run_cli("run", paths.image, "--model", out, "--out", tmp_path / "run", "--quiet") == 0
    assert (tmp_path / "run" / "field.classes.tif").exists()
    report = tmp_path / "scores.json"
    code = run_cli(
        "evaluate", paths.image, "--labels", paths.labels, "--model", out, "--json", report,
        "--quiet",
    )  # fmt: skip
    assert code == 0
    assert 0 <= json.loads(report.read_text())["miou"] <= 1


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    scenes = [scene()]
    out = tmp_path / "m"
    train(scenes, out, TrainConfig(epochs=1, **TINY))
    result = train(scenes, out, TrainConfig(epochs=2, resume=True, **TINY))
    assert [h.epoch for h in result.history] == [2]
    assert [h["epoch"] for h in result.meta.training["history"]] == [1, 2]
    with pytest.raises(InputError, match="already trained for 2 epoch"):
        train(scenes, out, TrainConfig(epochs=2, resume=True, **TINY))
    with pytest.raises(ModelError, match="state is for unet"):
        train(scenes, out, TrainConfig(epochs=3, resume=True, architecture="fpn", **TINY))


def test_fine_tune_from_the_default_model(tmp_path: Path) -> None:
    result = train([scene()], tmp_path / "ft", TrainConfig(init="default", epochs=1, **TINY))
    _, base = load_model("default")
    assert result.meta.architecture == base.architecture
    assert result.meta.normalization == base.normalization
    assert result.meta.training["fine_tuned_from"] == "default"
    model, _ = load_model(result.weights)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_other_architectures_and_band_counts(tmp_path: Path) -> None:
    five = scene(3, 128, multispectral=True)
    assert five.image.shape[0] == 5
    config = TrainConfig(architecture="fpn", epochs=1, val_fraction=0, **TINY)
    bands = ("red", "green", "blue", "red_edge", "nir")
    result = train([five], tmp_path / "fpn", config, band_names=bands)
    model, meta = load_model(result.weights)
    assert meta.bands == bands and meta.architecture == "fpn"
    assert model(torch.zeros(1, 5, 64, 64)).shape == (1, 4, 64, 64)
    with pytest.raises(ModelError, match="unknown architecture 'segformer'"):
        train([five], tmp_path / "x", TrainConfig(architecture="segformer", **TINY), bands)


def test_chips_never_touch_validation_blocks_or_their_gap() -> None:
    s = scene(4, 256)
    config = TrainConfig(chip_size=64, val_fraction=0.25, gap=16, scale_jitter=(0.75, 1.5))
    rng = np.random.default_rng(0)
    split = _Split(s, config, rng)
    assert len(split.val_windows) == 4
    sampler = ChipSampler([s], [split], Normalization(), config)
    for _ in range(300):
        size = int(rng.integers(48, 97))
        pos = sampler._position(rng, split, size)
        if pos is None:
            continue
        row, col = pos
        for win in split.val_windows:
            r0, c0 = int(win.row_off) - 16, int(win.col_off) - 16
            r1, c1 = int(win.row_off + win.height) + 16, int(win.col_off + win.width) + 16
            assert row + size <= r0 or row >= r1 or col + size <= c0 or col >= c1


def test_many_images_hold_out_whole_images_within_a_pixel_budget(tmp_path: Path) -> None:
    photos = [scene(seed, 96) for seed in range(1, 11)]
    config = TrainConfig(chip_size=64, val_fraction=0.2)
    held = held_out_images(photos, config, np.random.default_rng(0))
    assert len(held) == 2
    splits = [_Split(s, config, np.random.default_rng(0), k in held) for k, s in enumerate(photos)]
    for k, split in enumerate(splits):
        if k in held:  # scored whole, never trained on
            assert split.train_pixels == 0 and len(split.val_windows) == 1
            assert (split.val_windows[0].width, split.val_windows[0].height) == (96, 96)
        else:  # trained on whole: no block cut out of it
            assert split.val_windows == [] and split.train_pixels == 96 * 96
    # A budget of labelled pixels caps the images held out (at least one).
    big = [scene(seed, 96) for seed in range(1, 11)]
    many = TrainConfig(chip_size=64, val_fraction=0.9)
    assert len(held_out_images(big, many, np.random.default_rng(0))) == 9
    huge = [Scene(s.image, np.zeros((1900, 1900), np.uint8), "uint8", None, "h") for s in big[:8]]
    assert 1900 * 1900 <= VALIDATION_PIXELS < 2 * 1900 * 1900
    assert len(held_out_images(huge, many, np.random.default_rng(0))) == 1
    # Fewer images: blocks of each, as before.
    assert held_out_images(photos[:7], config, np.random.default_rng(0)) == set()
    # Training on them runs, validating on the held-out images.
    result = train(photos, tmp_path / "m", TrainConfig(epochs=1, val_fraction=0.2, **TINY))
    assert result.history[-1].validation is not None


def test_chips_are_balanced_augmented_and_seeded() -> None:
    s = scene(5, 192)
    config = TrainConfig(chip_size=64, chips_per_step=16, val_fraction=0)
    split = _Split(s, config, np.random.default_rng(0))
    sampler = ChipSampler([s], [split], Normalization(), config)
    x1, y1 = sampler.batch(np.random.default_rng(9))
    x2, y2 = sampler.batch(np.random.default_rng(9))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (16, 3, 64, 64) and y1.shape == (16, 64, 64)
    share = np.bincount(y1.numpy().ravel(), minlength=4) / y1.numel()
    overall = np.bincount(s.labels.ravel(), minlength=4) / s.labels.size
    # Rare classes are over-sampled relative to their share of the survey.
    assert share[2] + share[3] > overall[2] + overall[3]


def test_bad_options_are_rejected(tmp_path: Path, run_cli) -> None:
    with pytest.raises(InputError, match="chip size 50"):
        train([scene()], tmp_path / "m", TrainConfig(chip_size=50))
    with pytest.raises(InputError, match="too few to hold any out"):
        train([scene(size=64)], tmp_path / "m", TrainConfig(chip_size=64, val_fraction=0.5))
    paths = write_survey(generate_survey(draw_params(1, 64, 64), 1), tmp_path, "f")
    code = run_cli("train", paths.image, paths.image, "--labels", paths.labels, "--out", "m")
    assert code == 2


def test_a_time_budget_ends_training_and_its_schedule(tmp_path: Path) -> None:
    # 400 x 50 steps would take far longer than the 3 s budget: the plan shrinks to what
    # fits, the learning rate ends its decay there, and the model is written.
    config = TrainConfig(epochs=400, minutes=0.05, **{**TINY, "steps_per_epoch": 50})
    seen: list[tuple[int, int]] = []
    result = train([scene()], tmp_path / "m", config, progress=lambda d, t: seen.append((d, t)))
    done = result.meta.training["steps_done"]
    assert 3 <= done < 400 * 50
    assert seen[-1] == (done, done)  # the bar's total follows the plan and ends full
    assert seen[0][1] == 400 * 50 and len({t for _, t in seen}) > 1
    assert result.weights.is_file() and result.history[-1].epochs == -(-done // 50)
    state = torch.load(state_path(tmp_path / "m"), weights_only=False)
    lr = state["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.02 * config.learning_rate, rel=0.05)  # the decay's end
    with pytest.raises(InputError, match="--minutes 0"):
        train([scene()], tmp_path / "n", TrainConfig(minutes=0, **TINY))


def test_training_steps_in_bfloat16_or_float32(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert bf16_steps("auto", cpu) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert bf16_steps("bf16", cpu) and not bf16_steps("fp32", cpu)
    assert not bf16_steps("auto", torch.device("cuda"))
    scenes = [scene()]
    results = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(epochs=1, precision=precision, seed=3, **TINY)
        results[precision] = train(scenes, tmp_path / precision, config)
        model, _ = load_model(str(results[precision].weights))
        # Weights stay float32 either way.
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    # Same chips, same start: the two losses agree to bfloat16's precision.
    fp32, bf16 = (results[p].history[0].loss for p in ("fp32", "bf16"))
    assert fp32 == pytest.approx(bf16, rel=0.1) and fp32 != bf16
    with pytest.raises(InputError, match="training precision 'fp16'"):
        train(scenes, tmp_path / "x", TrainConfig(precision="fp16", **TINY))


def test_early_stopping_keeps_the_best_epoch() -> None:
    records = [
        {"epoch": 1, "val_miou": 0.5},
        {"epoch": 2, "val_miou": 0.7},
        {"epoch": 3, "val_miou": 0.6},
        {"epoch": 4, "val_miou": 0.7},
    ]
    assert best_epoch(records) == 2  # the earliest of equals
    assert best_epoch([{"epoch": 1, "loss": 0.3}]) is None  # no validation


def test_training_stops_when_validation_stops_improving(tmp_path: Path) -> None:
    # A learning rate this large wrecks the network within its first steps: validation
    # stops improving, and training stops `patience` epochs after its best.
    config = TrainConfig(epochs=8, patience=2, learning_rate=10.0, val_fraction=0.25, **TINY)
    result = train([scene(seed=6, size=192)], tmp_path / "m", config)
    assert result.stopped_early and result.best_epoch is not None
    assert len(result.history) == result.best_epoch + 2 < 8
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["epochs_done"] == result.best_epoch  # the best is kept
    never = train([scene(seed=6, size=192)], tmp_path / "n", replace(config, patience=0))
    assert not never.stopped_early and len(never.history) == 8


def test_a_time_budget_without_epochs_runs_as_many_as_fit(tmp_path: Path, run_cli) -> None:
    paths = write_survey(generate_survey(draw_params(3, 160, 160), 3), tmp_path, "f")
    out = tmp_path / "m"
    code = run_cli(
        "train", paths.image, "--labels", paths.labels, "--out", out, "--minutes", "0.1",
        "--steps", "1", "--chip-size", "64", "--chips-per-step", "1", "--val-fraction", "0",
        "--device", "cpu", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert code == 0
    training = json.loads((out / "model.json").read_text())["training"]
    assert training["epochs_done"] > 10  # the default 10 epochs bind only without --minutes

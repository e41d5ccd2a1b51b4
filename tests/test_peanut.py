"""Fine-tuning on real hand-labelled photos, as a user types it (a small version of
``scripts/peanut_finetune.py``): twelve peanut photos with colour masks, CC BY-SA 4.0
(see ``tests/data/peanut/README.md``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "peanut"
COLOURS = "crop=#00ff00,weed=#ff0000,soil=#000000"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluate(run_cli, model: str | Path, report: Path) -> dict:
    code = run_cli(
        "evaluate", DATA / "test" / "images", "--labels", DATA / "test" / "masks",
        "--label-colors", COLOURS, "--gsd", "0.001", "--model", model, "--device", "cpu",
        "--json", report, "--quiet",
    )  # fmt: skip
    assert code == 0
    return json.loads(report.read_text())


def test_a_short_fine_tune_on_real_photos_learns_their_three_classes(run_cli, tmp_path, capsys):
    out = tmp_path / "peanut-model"
    code = run_cli(
        "train", DATA / "train" / "images", "--labels", DATA / "train" / "masks",
        "--label-colors", COLOURS, "--gsd", "0.001", "--from", "default", "--out", out,
        "--epochs", "1", "--steps", "30", "--chips-per-step", "4", "--chip-size", "256",
        "--lr", "1e-3", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0
    # Three classes in the masks: a three-class model, the default's `diseased` left out.
    assert "diseased (--from default): no label marks it" in capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["soil", "crop", "weed"]
    assert meta["training"]["n_images"] == 8
    before = evaluate(run_cli, "default", tmp_path / "before.json")
    after = evaluate(run_cli, out, tmp_path / "after.json")
    # Pooled over the four test photos, scored on their three classes only.
    assert after["n_images"] == 4 and len(after["per_image"]) == 4
    assert after["scored_classes"] == ["soil", "crop", "weed"]
    assert after["miou"] > before["miou"] + 0.25

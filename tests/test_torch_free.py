"""Without PyTorch (``pip install agriseg``): run, batch and evaluate with ONNX Runtime,
one-line errors for what needs torch.

Each test runs agriseg in a subprocess where torch, torchvision,
segmentation-models-pytorch and onnx cannot be imported (``sys.modules[name] = None``
makes ``import name`` fail), so it proves those paths never import them. ``make
test`` also installs agriseg without torch into ``.venv-light`` and runs the sample
survey there (the Makefile's ``test-light``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import field_image, write_raster

pytest.importorskip("onnxruntime")

BLOCKED = ("torch", "torchvision", "segmentation_models_pytorch", "timm", "onnx")

PROBE = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
from agriseg_cli.main import main
code = main({argv!r})
print(json.dumps({{"code": code, "loaded": [m for m in {blocked!r} if sys.modules.get(m)]}}))
"""

FAST = ["--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32", "--no-preview"]


def agriseg_without_torch(*argv: object) -> tuple[int, str]:
    """Exit code and stderr of ``agriseg ARGV`` in a process that cannot import torch."""
    code = PROBE.format(blocked=BLOCKED, argv=[str(a) for a in argv])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    return result["code"], done.stderr.strip()


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("survey")
    return write_raster(folder / "field.tif", field_image(200, 180))


def test_run_batch_and_evaluate_need_no_torch(survey: Path, tmp_path: Path) -> None:
    # Shipped models run from their shipped .onnx files: at their own tile size.
    shipped = [a for a in FAST if a not in ("--tile-size", "128")]
    assert agriseg_without_torch("run", survey, "--out", tmp_path / "run", *shipped)[0] == 0
    summary = json.loads((tmp_path / "run" / "field.summary.json").read_text())
    assert summary["parameters"]["engine"] == "onnx"
    assert (tmp_path / "run" / "field.classes.tif").is_file()
    code, _ = agriseg_without_torch("batch", survey.parent, "--out", tmp_path / "batch", *shipped)
    assert code == 0 and (tmp_path / "batch" / "field" / "field.classes.tif").is_file()
    labels = tmp_path / "run" / "field.classes.tif"
    report = tmp_path / "scores.json"
    args = ("evaluate", survey, "--labels", labels, "--out", tmp_path / "ev", "--json", report)
    scoring = [a for a in shipped if a != "--no-preview"]  # evaluate takes no health options
    assert agriseg_without_torch(*args, *scoring)[0] == 0
    # Scored against its own earlier output: the same engine gives the same classes.
    assert json.loads(report.read_text())["miou"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["--engine", "torch"], "--engine torch needs PyTorch"),
        (["--device", "cuda"], "--device cuda needs PyTorch"),
        (["--tile-size", "128"], "to ONNX for ONNX Runtime at 128 px tiles needs PyTorch and onnx"),
    ],
)
def test_what_needs_torch_says_how_to_get_it(survey, tmp_path, argv, needs) -> None:
    code, err = agriseg_without_torch("run", survey, "--out", tmp_path / "o", "--quiet", *argv)
    assert code == 2 and "\n" not in err and needs in err
    assert 'pip install "agriseg[torch]"' in err
    assert not (tmp_path / "o").exists()


def test_training_and_export_need_torch(survey, tmp_path) -> None:
    for argv in (
        ["train", survey, "--labels", survey, "--out", tmp_path / "m"],
        ["export", "default", "--out", tmp_path / "m.onnx"],
    ):
        code, err = agriseg_without_torch(*argv)
        assert code == 2 and "\n" not in err and 'pip install "agriseg[torch]"' in err

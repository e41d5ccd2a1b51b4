"""The architecture registry: FCN, SegNet and DeepLabV3 beside the others, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_classes

from agriseg.classes import ClassList
from agriseg.errors import ModelError
from agriseg.learning.synthetic import draw_params, generate_survey, write_survey
from agriseg.models.architectures import (
    ARCHITECTURES,
    SEGNET_ENCODER,
    SegNet,
    build_model,
    default_encoder,
    max_unpool,
    with_classes,
)
from agriseg.models.meta import ModelMeta
from agriseg.models.registry import load_model, save_checkpoint

NEW = ("deeplabv3", "fcn", "segnet")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("architecture", NEW)
def test_train_save_load_and_run(tmp_path: Path, run_cli, architecture: str) -> None:
    survey = generate_survey(draw_params(3, 160, 160), 3)
    paths = write_survey(survey, tmp_path, "field")
    out = tmp_path / "models" / architecture
    code = run_cli(
        "train", paths.image, "--labels", paths.polygons, "--out", out, "--arch", architecture,
        "--epochs", "1", "--steps", "3", "--chip-size", "64", "--batch-size", "2",
        "--device", "cpu", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert code == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["architecture"] == architecture
    assert meta["encoder"] == default_encoder(architecture)
    model, loaded = load_model(out)
    assert loaded.architecture == architecture and not model.training
    outputs = {}
    for engine in ("torch", "onnx"):
        folder = tmp_path / f"run-{engine}"
        code = run_cli(
            "run", paths.image, "--model", out, "--out", folder, "--engine", engine,
            "--tile-size", "128", "--overlap", "32", "--device", "cpu", "--no-preview", "--quiet",
        )  # fmt: skip
        assert code == 0
        outputs[engine], grid = read_classes(folder, "field")
        assert grid["shape"] == survey.labels.shape
        summary = json.loads((folder / "field.summary.json").read_text())
        assert summary["model"]["architecture"] == architecture
    # The exported graph is the same network: float rounding flips a few pixels at most.
    assert (outputs["torch"] == outputs["onnx"]).mean() > 0.99


def test_export_command_writes_a_segnet_onnx_file(tmp_path: Path, run_cli) -> None:
    meta = ModelMeta(name="seg", architecture="segnet", encoder=SEGNET_ENCODER, tile_size=64)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(meta), meta, tmp_path / "seg")
    onnx_file = tmp_path / "seg.onnx"
    assert run_cli("export", checkpoint, "--format", "onnx", "--out", onnx_file) == 0
    assert onnx_file.stat().st_size > 0


def test_segnet_unpools_where_the_maxima_were() -> None:
    x = torch.randn(2, 3, 8, 10)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    expected = F.max_unpool2d(pooled, indices, 2, 2, output_size=x.shape[-2:])
    assert torch.equal(max_unpool(pooled, indices, x.shape), expected)


def test_segnet_shapes_and_its_own_encoder() -> None:
    model = SegNet(in_channels=5, classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 5, 64, 96)).shape == (1, 4, 64, 96)
    meta = ModelMeta(name="s", architecture="segnet", encoder="mobilenet_v2")
    with pytest.raises(ValueError, match="own encoder"):
        build_model(meta)


@pytest.mark.parametrize("architecture", NEW)
def test_new_classes_replace_only_the_head(architecture: str) -> None:
    meta = ModelMeta(name="m", architecture=architecture, encoder=default_encoder(architecture))
    model = build_model(meta)
    five = ClassList.parse("soil:background,maize:crop,grass_weed:weed,thistle:weed,other")
    tuned, tuned_meta = with_classes(model, meta, five)
    assert tuned_meta.classes.names == five.names
    before, after = model.state_dict(), tuned.state_dict()
    heads = [k for k in after if k.startswith("segmentation_head.")]
    assert heads and after[heads[0]].shape[0] == 5
    kept = [k for k in after if not k.startswith("segmentation_head.")]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)


def test_unknown_architecture_lists_the_registry() -> None:
    meta = ModelMeta(name="m", architecture="segformer", encoder="mobilenet_v2")
    with pytest.raises(ModelError, match="expected one of deeplabv3, deeplabv3plus, fcn"):
        build_model(meta)
    assert {"fcn", "segnet", "deeplabv3", "deeplabv3plus"} <= set(ARCHITECTURES)


def test_models_module_loads_without_torch() -> None:
    code = (
        "import sys; import agriseg.models.registry, agriseg.models.meta; "
        "assert 'torch' not in sys.modules and 'segmentation_models_pytorch' not in sys.modules; "
        "import agriseg.models.architectures; assert 'torch' in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_dilated_encoders_keep_full_resolution_outputs() -> None:
    for architecture in ("fcn", "deeplabv3"):
        meta = ModelMeta(name="m", architecture=architecture, encoder="mobilenet_v2")
        with torch.no_grad():
            out = build_model(meta).eval()(torch.randn(1, 3, 96, 128))
        assert out.shape == (1, 4, 96, 128)
        assert np.isfinite(out.numpy()).all()

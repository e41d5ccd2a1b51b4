"""ONNX export (for ONNX Runtime and QGIS Deepness) and the ``--engine`` choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import field_image, read_classes, write_raster

from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.models.architectures import ARCHITECTURES, build_model, default_encoder
from agriseg.models.inference import resolve_engine
from agriseg.models.meta import SIZE_DIVISOR, ModelMeta
from agriseg.models.onnx_export import (
    CACHE_ENV,
    cached_export,
    deepness_overlap_px,
    export_model,
)
from agriseg.models.onnx_format import AGRISEG_META_KEY, OPSET
from agriseg.models.onnx_graph import export_bytes
from agriseg.models.registry import find_model, load_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TILE = 128
FAST = ("--device", "cpu", "--quiet", "--overlap", "32", "--no-preview", "--format", "geojson")

#: The share of pixels on which two engines' class rasters must agree.
AGREEMENT = 0.999


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path, _ = export_model("default", tmp_path_factory.mktemp("onnx") / "unet.onnx", TILE)
    return path


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("field") / "field.tif", field_image(300, 260))


def props(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_export_matches_torch_on_random_tiles(exported):
    model, _ = load_model("default")
    x = torch.randn(3, 3, TILE, TILE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == expected.shape == (3, 4, TILE, TILE)
    assert np.abs(got - expected).max() < 1e-4
    # Any batch, one fixed tile edge.
    batch, bands, height, width = session.get_inputs()[0].shape
    assert isinstance(batch, str) and (bands, height, width) == (3, TILE, TILE)
    graph = onnx.load(str(exported))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_every_deepness_metadata_key_is_json_of_the_right_type(exported):
    values = {key: json.loads(value) for key, value in props(exported).items()}
    _, meta = find_model("default")
    assert values["model_type"] == "Segmentor"
    assert values["class_names"] == {str(i): n for i, n in enumerate(meta.classes.names)}
    assert isinstance(values["resolution"], float)
    assert values["resolution"] == pytest.approx(meta.gsd_m * 100)
    for key in ("tile_size", "tiles_size"):
        assert values[key] == TILE and isinstance(values[key], int)
    assert isinstance(values["tiles_overlap"], int) and 0 <= values["tiles_overlap"] < 50
    # Deepness's stride (tile minus its overlap) stays on the model's 32 px grid.
    assert (TILE - deepness_overlap_px(TILE, values["tiles_overlap"])) % SIZE_DIVISOR == 0
    for key, expected in (
        ("standardization_mean", meta.normalization.mean),
        ("standardization_std", meta.normalization.std),
    ):
        assert isinstance(values[key], list) and all(isinstance(v, float) for v in values[key])
        assert values[key] == pytest.approx(list(expected[:3]))
    assert isinstance(values["seg_thresh"], float) and 0 <= values["seg_thresh"] < 1
    # 0 leaves Deepness's median filter off, as agriseg's class raster has none.
    assert isinstance(values["seg_small_segment"], int) and values["seg_small_segment"] == 0
    # agriseg's own metadata, read back by find_model: the exported tile size.
    assert values[AGRISEG_META_KEY]["tile_size"] == TILE
    _, onnx_meta = find_model(exported)
    assert onnx_meta.classes == meta.classes and onnx_meta.tile_size == TILE


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


def test_run_with_exported_onnx_agrees_with_torch(exported, field, tmp_path, run_cli):
    assert run_cli("run", field, "--out", tmp_path / "onnx", "--model", exported, *FAST) == 0
    torch_args = ("--model", "default", "--tile-size", TILE, "--engine", "torch")
    assert run_cli("run", field, "--out", tmp_path / "torch", *torch_args, *FAST) == 0
    onnx_classes, _ = read_classes(tmp_path / "onnx", field.stem)
    torch_classes, _ = read_classes(tmp_path / "torch", field.stem)
    assert agreement(onnx_classes, torch_classes) >= AGREEMENT
    summary = json.loads((tmp_path / "onnx" / "field.summary.json").read_text())
    assert summary["parameters"]["engine"] == "onnx"
    assert summary["model"]["path"] == str(exported)


def test_engine_onnx_agrees_with_engine_torch(field, tmp_path, run_cli):
    common = ("--tile-size", TILE, *FAST)
    for engine in ("onnx", "torch"):
        assert run_cli("run", field, "--out", tmp_path / engine, "--engine", engine, *common) == 0
    onnx_classes, _ = read_classes(tmp_path / "onnx", field.stem)
    torch_classes, _ = read_classes(tmp_path / "torch", field.stem)
    assert agreement(onnx_classes, torch_classes) >= AGREEMENT
    for engine in ("onnx", "torch"):
        summary = json.loads((tmp_path / engine / "field.summary.json").read_text())
        assert summary["parameters"]["engine"] == engine


def test_bad_engine_is_a_one_line_error(field, tmp_path, run_cli, capsys):
    assert run_cli("run", field, "--out", tmp_path / "o", "--engine", "tensorrt", *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--engine 'tensorrt'" in err and "auto, torch, onnx" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="engine"):
        RunConfig(engine="tensorrt")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--tile-size", "256"), "--tile-size 128"),
        (("--engine", "torch"), "--engine torch cannot run the ONNX model"),
    ],
)
def test_onnx_model_misuse_is_a_one_line_error(
    exported, field, tmp_path, run_cli, capsys, extra, message
):
    args = ("run", field, "--out", tmp_path / "o", "--model", exported, *FAST, *extra)
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_export_command_writes_the_file(tmp_path, run_cli, capsys):
    out = tmp_path / "m.onnx"
    assert run_cli("export", "default", "--out", out, "--tile-size", "64") == 0
    assert out.stem in capsys.readouterr().out
    assert json.loads(props(out)["tile_size"]) == 64
    assert run_cli("export", "default", "--out", out, "--tile-size", "100") == 2


def test_checkpoints_are_exported_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    weights, meta = find_model("default")
    first = cached_export(weights, meta, 64)
    assert isinstance(first, str) and first.startswith(str(tmp_path))
    made = Path(first).stat().st_mtime_ns
    assert cached_export(weights, meta, 64) == first
    assert Path(first).stat().st_mtime_ns == made
    assert cached_export(weights, meta, 96) != first


def test_auto_engine_is_onnx_runtime_on_cpu_and_torch_on_cuda():
    cpu, cuda = "cpu", "cuda"
    assert resolve_engine("auto", cpu) == "onnx"
    assert resolve_engine("auto", cuda) == "torch"
    assert resolve_engine("torch", cpu) == "torch"
    assert resolve_engine("auto", cpu, "m.onnx") == "onnx"
    with pytest.raises(InputError, match="--device cpu"):
        resolve_engine("onnx", cuda)
    with pytest.raises(InputError, match="--engine torch cannot run"):
        resolve_engine("torch", cpu, "m.onnx")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_exports_exactly(architecture):
    # PSPNet pools to 3 x 3 and 6 x 6 bins, which the exporter refuses as such.
    encoder = default_encoder(architecture)
    meta = ModelMeta(name="tiny", architecture=architecture, encoder=encoder, tile_size=96)
    torch.manual_seed(0)
    model = build_model(meta).eval()
    session = ort.InferenceSession(
        export_bytes(model, meta, 96), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "f.tif"],
        ["batch", "surveys", "--out", "results"],
        ["evaluate", "f.tif", "--labels", "l.tif"],
        ["bench"],
    ],
)
def test_every_segmentation_command_takes_engine(argv):
    import importlib

    from agriseg_cli.main import build_parser

    command = importlib.import_module(f"agriseg_cli.{argv[0]}")
    args = build_parser().parse_args([*argv, "--engine", "onnx"])
    assert command.config_from_args(args).engine == "onnx"


@pytest.mark.parametrize("name", ["agriseg-unet", "agriseg-pspnet"])
def test_shipped_onnx_models_stay_in_sync_with_their_weights(name: str) -> None:
    """The shipped .onnx files are exports of the shipped weights as loaded: rerun
    ``scripts/train_default.py --export-onnx`` whenever the weights change."""
    from agriseg.models.onnx_export import onnx_meta, shipped_onnx
    from agriseg.models.onnx_format import read_onnx_meta
    from agriseg.models.registry import shipped_dir

    weights, meta = find_model(name)
    path = shipped_onnx(weights, meta.tile_size)
    assert path is not None and path.parent == shipped_dir()
    assert read_onnx_meta(path) == onnx_meta(meta, meta.tile_size)
    model, _ = load_model(name)
    x = np.random.default_rng(1).normal(size=(2, 3, meta.tile_size, meta.tile_size))
    x = x.astype("float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(found - expected).max() < 1e-4
    # A run with the shipped model uses the shipped file: nothing is exported.
    assert cached_export(weights, meta, meta.tile_size) == str(path)


def shipped_int8(name: str) -> Path:
    from agriseg.models.onnx_export import INT8_SUFFIX
    from agriseg.models.registry import shipped_dir

    path = shipped_dir() / f"{name}{INT8_SUFFIX}"
    # Both shipped models keep held-out mIoU in int8 (docs/performance.md), so both ship it.
    assert path.is_file(), f"{path} is missing: rerun scripts/train_default.py --export-onnx"
    return path


@pytest.mark.parametrize("name", ["agriseg-unet", "agriseg-pspnet"])
def test_shipped_int8_models_stay_in_sync_with_their_fp32_files(name: str) -> None:
    """The int8 files are quantisations of the shipped fp32 ONNX files: rerun
    ``scripts/train_default.py --export-onnx`` whenever the weights change."""
    import dataclasses

    from agriseg.learning.synthetic import draw_params, generate_survey
    from agriseg.models.onnx_export import shipped_onnx
    from agriseg.models.onnx_format import read_onnx_meta

    int8 = shipped_int8(name)
    weights, meta = find_model(name)
    fp32 = shipped_onnx(weights, meta.tile_size)
    assert fp32 is not None and shipped_onnx(weights, meta.tile_size, "int8") == int8
    found, expected = read_onnx_meta(int8), read_onnx_meta(fp32)
    assert "int8" in found.description
    assert dataclasses.replace(found, description="") == dataclasses.replace(
        expected, description=""
    )
    graph = onnx.load(str(int8))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    # Same classes on a generated survey (seed outside training, held-out and calibration).
    from agriseg.models.inference import normalize

    image = generate_survey(draw_params(30001, 512, 512), 30001).image[:3].astype("float32")
    x = normalize(image, "uint8", meta.normalization)[None]
    runs = {}
    for label, path in (("fp32", fp32), ("int8", int8)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs[label] = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert agreement(runs["fp32"].argmax(1), runs["int8"].argmax(1)) >= 0.98
    assert np.abs(runs["fp32"] - runs["int8"]).mean() < 0.02


def test_precision_picks_the_shipped_int8_or_fp32_file(field, tmp_path, run_cli, capsys):
    int8 = shipped_int8("agriseg-unet")
    for precision in ("auto", "int8", "fp32"):
        out = tmp_path / precision
        args = ("run", field, "--out", out, "--precision", precision, "--engine", "onnx")
        assert run_cli(*args, *FAST) == 0
        summary = json.loads((out / "field.summary.json").read_text())
        wanted = "fp32" if precision == "fp32" else "int8"
        assert summary["parameters"]["precision"] == wanted
        assert summary["model"]["path"].endswith(int8.name if wanted == "int8" else ".safetensors")
    int8_classes, _ = read_classes(tmp_path / "int8", field.stem)
    fp32_classes, _ = read_classes(tmp_path / "fp32", field.stem)
    assert agreement(int8_classes, fp32_classes) >= 0.98
    for extra in (("--engine", "torch"), ("--tile-size", "128")):
        args = ("run", field, "--out", tmp_path / "bad", "--precision", "int8", *FAST, *extra)
        assert run_cli(*args) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--precision int8" in err and "--precision fp32" in err
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_batch_run_a_tile_at_a_time_gives_the_whole_batchs_probabilities(precision):
    """ONNX Runtime runs a chunk's tiles one at a time, with its memory arena, by
    default (``OrtSettings``); the probabilities are those of one run of the whole
    batch without the arena, bit for bit."""
    from agriseg.models.inference import OnnxForward, OrtSettings
    from agriseg.models.onnx_export import shipped_onnx
    from agriseg.models.onnx_format import read_onnx_meta

    weights, meta = find_model("agriseg-unet")
    path = shipped_onnx(weights, meta.tile_size, precision)
    assert path is not None
    onnx_meta = read_onnx_meta(path)
    x = np.random.default_rng(5).normal(size=(3, 3, meta.tile_size, meta.tile_size))
    default = OnnxForward(onnx_meta, 1, path)
    assert default.settings.memory_arena and default.settings.tiles_per_run == 1
    whole = OnnxForward(onnx_meta, 1, path, OrtSettings(memory_arena=False, tiles_per_run=4))
    pairs = OnnxForward(onnx_meta, 1, path, OrtSettings(tiles_per_run=2))
    expected = whole(x)
    assert expected.shape == (3, len(meta.classes), meta.tile_size, meta.tile_size)
    assert np.array_equal(default(x), expected)
    assert np.array_equal(pairs(x), expected)

"""Exported models in QGIS Deepness: its defaults from the file give agriseg's map.

Deepness needs QGIS, so ``scripts/deepness_agreement.py`` re-implements its processing
(resampling to the model's resolution, 0-255 scaling and standardisation, its tiling
with the stored overlap percentage, zero padding, its median filter, argmax); these
tests run it against ``agriseg run`` with ONNX Runtime on a generated survey.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agriseg.learning.synthetic import draw_params, generate_survey, write_survey
from agriseg.models.meta import SIZE_DIVISOR
from agriseg.models.onnx_export import (
    DEFAULT_OVERLAP_PX,
    MAX_OVERLAP_PCT,
    deepness_metadata,
    deepness_overlap_pct,
    deepness_overlap_px,
)
from agriseg.models.onnx_format import read_onnx_meta
from agriseg.models.registry import shipped_dir

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "deepness_agreement.py"
MODEL = shipped_dir() / "agriseg-unet.onnx"

#: Share of pixels on which Deepness's map, with the defaults it loads, must agree.
AGREEMENT = 0.99


def load_script():
    spec = importlib.util.spec_from_file_location("deepness_agreement", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


deepness = load_script()


@pytest.mark.parametrize("tile", range(SIZE_DIVISOR, 1025, SIZE_DIVISOR))
def test_exported_overlap_keeps_deepness_tiles_on_the_model_grid(tile: int) -> None:
    pct = deepness_overlap_pct(tile)
    overlap = deepness_overlap_px(tile, pct)
    assert 0 <= pct <= MAX_OVERLAP_PCT and isinstance(pct, int)
    assert overlap % SIZE_DIVISOR == 0 and (tile - overlap) % SIZE_DIVISOR == 0
    assert tile - overlap > 0
    # No whole percentage up to the cap that keeps the grid comes nearer the run's overlap.
    for other in range(MAX_OVERLAP_PCT + 1):
        if deepness_overlap_px(tile, other) % SIZE_DIVISOR == 0:
            nearer = abs(deepness_overlap_px(tile, other) - DEFAULT_OVERLAP_PX)
            assert abs(overlap - DEFAULT_OVERLAP_PX) <= nearer


def test_deepness_overlap_is_computed_as_deepness_does() -> None:
    # ProcessingOverlap.get_overlap_px: 12 % of 512 px is 61 px (stride 451, off the grid).
    assert deepness_overlap_px(512, 12) == 61
    assert deepness_overlap_px(512, 25) == 128 and deepness_overlap_pct(512) == 25
    assert deepness_overlap_px(256, 25) == 64 and deepness_overlap_pct(256) == 25


def test_settings_deepness_loads_from_the_shipped_file_leave_its_filter_off() -> None:
    settings = deepness.DeepnessSettings.from_onnx(MODEL)
    meta = read_onnx_meta(MODEL)
    assert settings.tile_size == meta.tile_size == 512
    assert settings.median_size == 1  # cv2.medianBlur with a kernel of 1 copies
    assert settings.stride_px % SIZE_DIVISOR == 0 and settings.overlap_px == 128
    assert settings.threshold == 0.0
    assert settings.resolution_cm == pytest.approx(100 * meta.gsd_m, abs=0.005)
    assert settings.mean == pytest.approx(meta.normalization.mean[:3])


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """A generated survey at the model's GSD whose tiles Deepness pads on top and right."""
    meta = read_onnx_meta(MODEL)
    params = draw_params(11, 576, 640, gsd_m=meta.gsd_m)
    return write_survey(generate_survey(params, 11), tmp_path_factory.mktemp("s"), "s").image


@pytest.fixture(scope="module")
def agriseg_map(survey: Path, tmp_path_factory) -> np.ndarray:
    return deepness.agriseg_class_map(survey, MODEL, tmp_path_factory.mktemp("run") / "out")


def deepness_map(survey: Path, settings) -> np.ndarray:
    found, res = deepness.deepness_class_map(survey, MODEL, settings)
    return deepness.on_raster_grid(found, res, survey)


def test_deepness_with_the_exported_defaults_agrees_with_agriseg_run(survey, agriseg_map):
    settings = deepness.DeepnessSettings.from_onnx(MODEL)
    found = deepness_map(survey, settings)
    assert found.shape == agriseg_map.shape == (576, 640)
    share = float((found == agriseg_map).mean())
    assert share >= AGREEMENT, f"{share:.4f}"
    # The comparison tells settings apart: the former defaults (12 %: 61 px, stride off
    # the grid; a 3 x 3 median filter) fall clearly short.
    former = dataclasses.replace(settings, overlap_pct=12, small_segment=3)
    assert float((deepness_map(survey, former) == agriseg_map).mean()) < AGREEMENT - 0.01


@pytest.mark.parametrize(
    "name", ["agriseg-unet", "agriseg-unet.int8", "agriseg-pspnet", "agriseg-pspnet.int8"]
)
def test_shipped_onnx_files_carry_the_current_deepness_defaults(name: str) -> None:
    """Rewrite their metadata (not their graphs) when :func:`deepness_metadata` changes."""
    path = shipped_dir() / f"{name}.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    meta = read_onnx_meta(path)
    for key, value in deepness_metadata(meta, meta.tile_size).items():
        assert json.loads(props[key]) == value, key

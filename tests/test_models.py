"""Shipped models: load offline from the package, small, documented; `agriseg models`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agriseg.classes import CLASS_NAMES
from agriseg.models.inference import normalize
from agriseg.models.meta import Normalization
from agriseg.models.registry import DEFAULT_MODEL, load_model, shipped_dir, shipped_models

SHIPPED = ("agriseg-unet", "agriseg-pspnet")


def test_both_models_are_shipped_and_unet_is_the_default() -> None:
    assert {m.name for m in shipped_models()} >= set(SHIPPED)
    assert DEFAULT_MODEL == "agriseg-unet"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_from_the_package(name: str) -> None:
    weights = shipped_dir() / f"{name}.safetensors"
    assert weights.stat().st_size <= 15 * 2**20
    model, meta = load_model(name)
    assert meta.classes.names == CLASS_NAMES and meta.tile_size == 512
    assert meta.description and "placeholder" not in meta.description
    assert meta.training.get("command")
    pooled = meta.metrics["heldout_pooled"]
    assert 0 < pooled["miou"] <= 1 and set(pooled["classes"]) == set(CLASS_NAMES)
    with torch.inference_mode():
        out = model(torch.zeros(1, len(meta.bands), 64, 64))
    assert out.shape == (1, len(CLASS_NAMES), 64, 64)


def test_models_command_lists_them(run_cli, capsys) -> None:
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert "agriseg-unet (default)" in out and "agriseg-pspnet" in out


def test_normalize_maps_scale_and_zeroes_invalid_values() -> None:
    norm = Normalization()
    data = np.array([[[0.0, 255.0], [np.nan, np.inf]]] * 3, dtype="float32")
    out = normalize(data, "uint8", norm)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], -2.0)
    np.testing.assert_allclose(out[:, 0, 1], 2.0)
    assert (out[:, 1, :] == 0).all()
    assert np.isnan(data[:, 1, 0]).all(), "the input is left alone"

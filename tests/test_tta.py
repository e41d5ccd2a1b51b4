"""Test-time augmentation: the mean over the eight D4 views, inside the tiling."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import field_image, read_classes, write_raster

from agriseg.models.inference import d4_mean


def test_each_view_is_brought_back_to_the_tiles_orientation() -> None:
    x = torch.rand(2, 3, 16, 16)
    # A model that returns its input: every view, turned back, is the input itself.
    assert torch.allclose(d4_mean(lambda t: t, x), x)
    # A model that only sees one corner: the mean spreads it over the eight views' corners.
    corner = torch.zeros(1, 1, 4, 4)
    corner[..., 0, 0] = 1

    def top_left(t: torch.Tensor) -> torch.Tensor:
        return t * corner

    ones = torch.ones(1, 1, 4, 4)
    mean = d4_mean(top_left, ones)[0, 0]
    expected = torch.zeros(4, 4)
    for r, c in ((0, 0), (0, 3), (3, 0), (3, 3)):
        expected[r, c] = 2 / 8  # each corner is the top-left of two of the eight views
    assert torch.allclose(mean, expected)


def test_a_run_with_tta_stays_on_the_grid_and_mostly_agrees(tmp_path, run_cli) -> None:
    path = write_raster(tmp_path / "f.tif", field_image(160, 200, seed=4))
    common = ("--tile-size", "128", "--overlap", "32", "--device", "cpu", "--quiet")
    common += ("--no-preview", "--engine", "torch")
    assert run_cli("run", path, "--out", tmp_path / "plain", *common) == 0
    assert run_cli("run", path, "--out", tmp_path / "tta", "--tta", *common) == 0
    plain, _ = read_classes(tmp_path / "plain", "f")
    tta, grid = read_classes(tmp_path / "tta", "f")
    assert tta.shape == plain.shape == grid["shape"]
    assert (tta == plain).mean() > 0.9
    summary = json.loads((tmp_path / "tta" / "f.summary.json").read_text())
    assert summary["parameters"]["tta"] is True
    assert not np.array_equal(tta, plain)  # the views do change some pixels

"""Post-processing inside the tiling: --refine crf (dense CRF) and --tta, on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_classes, write_raster

from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.models.refine import crf_probabilities, refine_tiles
from agriseg.optional import crf_available

needs_crf = pytest.mark.skipif(
    not crf_available(), reason="--refine crf needs the optional crf extra (pydensecrf2)"
)

#: Each post-processing's command-line options and what summary.json records.
POST = {"tta": (("--tta",), {"tta": True}), "crf": (("--refine", "crf"), {"refine": "crf"})}
RUN = ("--device", "cpu", "--no-preview", "--quiet")


def two_regions(height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An image whose left part is dark and right part bright, and its truth."""
    truth = np.zeros((height, width), dtype="int64")
    truth[:, width // 2 + 5 :] = 1
    image = np.where(truth == 1, 200.0, 40.0)[None].repeat(3, axis=0).astype("float32")
    return image, truth


@needs_crf
def test_crf_follows_the_image_edges() -> None:
    image, truth = two_regions()
    rng = np.random.default_rng(0)
    # A blurred, noisy classifier: right about the regions, wrong near the edge and in
    # scattered pixels.
    p1 = np.clip(np.linspace(-0.3, 1.3, truth.shape[1]) + rng.normal(0, 0.25, truth.shape), 0, 1)
    probs = np.stack([1 - p1, p1]).astype("float32") * 0.9 + 0.05
    before = (probs.argmax(0) == truth).mean()
    refined = crf_probabilities(probs, image)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    assert np.allclose(refined.sum(axis=0), 1, atol=1e-4)
    after = (refined.argmax(0) == truth).mean()
    assert before < 0.95 and after > 0.99


@needs_crf
def test_crf_takes_any_number_of_bands_per_tile() -> None:
    image, truth = two_regions(32, 32)
    five = np.concatenate([image, image[:2] * 0.5])
    probs = np.stack([truth == 0, truth == 1]).astype("float32") * 0.6 + 0.2
    batch = refine_tiles(np.stack([probs, probs[::-1]]), np.stack([five, five]))
    assert batch.shape == (2, 2, 32, 32)
    assert (batch[0].argmax(0) == truth).all() and (batch[1].argmax(0) == 1 - truth).all()


def test_refine_option_is_checked() -> None:
    with pytest.raises(InputError, match="--refine 'dense'"):
        RunConfig(refine="dense")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "f.tif"],
        ["batch", "surveys", "--out", "results"],
        ["evaluate", "f.tif", "--labels", "l.tif"],
    ],
)
def test_run_batch_and_evaluate_take_refine(argv: list[str]) -> None:
    from agriseg_cli.main import build_parser

    args = build_parser().parse_args([*argv, "--refine", "crf"])
    assert args.refine == "crf"


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2 cm survey with a masked corner; its path and its valid pixels."""
    from agriseg.learning.synthetic import draw_params, generate_survey

    image = generate_survey(draw_params(12, height=560, width=600, gsd_m=0.02), 12).image
    valid = np.ones(image.shape[1:], dtype=bool)
    valid[:70, :90] = False
    path = tmp_path_factory.mktemp("survey") / "survey.tif"
    return write_raster(path, image, mask=valid), valid


@pytest.fixture(scope="module")
def plain(survey, tmp_path_factory) -> np.ndarray:
    from agriseg_cli.main import main

    out = tmp_path_factory.mktemp("plain")
    assert main(["run", str(survey[0]), "--out", str(out), "--tile-size", "512", *RUN]) == 0
    return read_classes(out, "survey")[0]


@pytest.mark.parametrize("option", ["tta", pytest.param("crf", marks=needs_crf)])
def test_grid_nodata_and_tiling_invariance(tmp_path, run_cli, survey, plain, option) -> None:
    path, valid = survey
    options, recorded = POST[option]
    found = {}
    for tile in (512, 384):
        out = tmp_path / f"t{tile}"
        assert run_cli("run", path, "--out", out, "--tile-size", tile, *options, *RUN) == 0
        found[tile], grid = read_classes(out, "survey")
        assert grid["shape"] == valid.shape and grid["nodata"] == 255
        assert np.array_equal(found[tile] == 255, ~valid)
        summary = json.loads((out / "survey.summary.json").read_text())
        assert recorded.items() <= summary["parameters"].items()
    assert (found[512] == found[384]).mean() >= 0.995
    # It changes the map, but not beyond recognition.
    assert not np.array_equal(found[512], plain)
    assert (found[512] == plain).mean() > 0.8

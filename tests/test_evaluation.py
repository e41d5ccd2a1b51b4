"""Scores against an independent computation; windowed comparison; `agriseg evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import UTM, UTM_TRANSFORM, write_raster
from shapely.geometry import box

from agriseg.classes import DEFAULT_CLASSES
from agriseg.errors import InputError
from agriseg.learning.evaluation import compare_rasters
from agriseg.learning.metrics import confusion_matrix, scores
from agriseg.learning.synthetic import draw_params, generate_survey, write_survey


def reference_iou(truth: np.ndarray, pred: np.ndarray, k: int) -> float:
    """IoU of class ``k`` from pixel sets, ignoring unlabelled (255) truth."""
    valid = truth != 255
    t = set(np.flatnonzero(valid & (truth == k)))
    p = set(np.flatnonzero(valid & (pred == k)))
    return len(t & p) / len(t | p) if t | p else float("nan")


def test_scores_match_an_independent_computation() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, (37, 29)).astype("uint8")
    truth[rng.random(truth.shape) < 0.1] = 255
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    pred = np.where(pred == 255, 0, pred).astype("uint8")
    found = scores(confusion_matrix(truth, pred, 4), DEFAULT_CLASSES)
    for k, c in enumerate(found.classes):
        assert c.iou == pytest.approx(reference_iou(truth, pred, k))
        valid = truth != 255
        tp = np.sum(valid & (truth == k) & (pred == k))
        assert c.precision == pytest.approx(tp / np.sum(valid & (pred == k)))
        assert c.recall == pytest.approx(tp / np.sum(valid & (truth == k)))
        assert c.f1 == pytest.approx(2 * c.precision * c.recall / (c.precision + c.recall))
    ious = [reference_iou(truth, pred, k) for k in range(4)]
    assert found.miou == pytest.approx(np.mean(ious))
    assert found.confusion.sum() == np.sum(truth != 255)


def test_absent_class_is_left_out_of_the_mean() -> None:
    truth = np.array([[0, 0, 1, 1]])
    found = scores(confusion_matrix(truth, truth, 4), DEFAULT_CLASSES)
    assert found.miou == 1.0
    assert np.isnan(found.classes[3].iou)
    assert found.to_dict()["classes"]["diseased"]["iou"] is None


def _polygons(path: Path, crs: str = UTM) -> Path:
    # Left half crop, a weed square, right half soil; bottom rows unlabelled.
    x0, y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    px = UTM_TRANSFORM.a
    frame = gpd.GeoDataFrame(
        {"class": ["crop", "Soil", "weed"]},
        geometry=[
            box(x0, y0 - 48 * px, x0 + 40 * px, y0),
            box(x0 + 40 * px, y0 - 48 * px, x0 + 80 * px, y0),
            box(x0 + 10 * px, y0 - 20 * px, x0 + 20 * px, y0 - 10 * px),
        ],
        crs=UTM,
    ).to_crs(crs)
    frame.to_file(path, driver="GPKG")
    return path


def _expected_truth() -> np.ndarray:
    truth = np.full((64, 80), 255, dtype="uint8")
    truth[:48, :40] = 1
    truth[:48, 40:] = 0
    truth[10:20, 10:20] = 2
    return truth


@pytest.mark.parametrize("crs", [UTM, "EPSG:4326"])
def test_compare_rasters_reads_window_by_window_with_vector_labels(
    tmp_path: Path, crs: str
) -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (1, 64, 80)).astype("uint8")
    classes = write_raster(tmp_path / "pred.tif", pred, block=16)
    truth = _expected_truth()
    found = compare_rasters(classes, _polygons(tmp_path / f"labels{crs[-4:]}.gpkg", crs))
    expected = confusion_matrix(truth, pred[0], 4)
    if crs == UTM:
        np.testing.assert_array_equal(found.confusion, expected)
    else:
        # Reprojected edges may move by a pixel; totals stay close.
        assert abs(int(found.confusion.sum()) - int(expected.sum())) < 0.05 * expected.sum()


def test_compare_rasters_with_class_raster_labels(tmp_path: Path) -> None:
    truth = _expected_truth()
    pred = np.where(truth == 255, 3, truth).astype("uint8")
    pred[0, 0] = 255  # nodata in the prediction: counted apart
    classes = write_raster(tmp_path / "pred.tif", pred[None], block=16)
    labels = write_raster(tmp_path / "truth.tif", truth[None], nodata=255, block=16)
    found = compare_rasters(classes, labels)
    assert found.miou == 1.0
    assert found.unpredicted == 1


def test_bad_labels_say_what_is_wrong(tmp_path: Path) -> None:
    classes = write_raster(tmp_path / "pred.tif", np.zeros((1, 16, 16), "uint8"))
    frame = gpd.GeoDataFrame({"kind": ["tree"]}, geometry=[box(0, 0, 1, 1)], crs=UTM)
    frame.to_file(tmp_path / "v.gpkg")
    with pytest.raises(InputError, match="no column 'class'"):
        compare_rasters(classes, tmp_path / "v.gpkg")
    with pytest.raises(InputError, match=r"unknown class value\(s\) \['tree'\]"):
        compare_rasters(classes, tmp_path / "v.gpkg", label_column="kind")
    bad = write_raster(tmp_path / "bad.tif", np.full((1, 16, 16), 7, "uint8"))
    with pytest.raises(InputError, match=r"value\(s\) \[7\]"):
        compare_rasters(classes, bad)


def test_evaluate_cli_matches_its_own_class_raster(tmp_path: Path, run_cli) -> None:
    survey = generate_survey(draw_params(7, 96, 96), 7)
    paths = write_survey(survey, tmp_path, "field")
    report = tmp_path / "scores.json"
    code = run_cli(
        "evaluate", paths.image, "--labels", paths.polygons, "--out", tmp_path / "run",
        "--json", report, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0
    found = json.loads(report.read_text())
    with rasterio.open(tmp_path / "run" / "field.classes.tif") as src:
        pred = src.read(1)
    for k, name in enumerate(("soil", "crop", "weed", "diseased")):
        expected = reference_iou(survey.labels, pred, k)
        got = found["classes"][name]["iou"]
        assert (got is None and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-6)
    assert sum(map(sum, found["confusion_matrix"]["counts"])) == survey.labels.size

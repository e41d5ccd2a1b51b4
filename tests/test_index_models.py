"""The models without a network: ``--model vegetation`` and ``--model rows``, run through
``agriseg run`` on generated surveys (real GeoTIFFs, the real pipeline) and scored
against the surveys' own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from agriseg.classes import NODATA
from agriseg.errors import InputError
from agriseg.learning.row_labels import SURE_CONFIDENCE, row_labels
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import CROP, DISEASED, SOIL, WEED, draw_params, generate_survey
from agriseg.models.croprows import find_rows, label_rows
from agriseg.models.index_plants import plants_on_index
from agriseg.models.inference import resolve_engine
from agriseg.models.registry import find_model, load_model, shipped_models
from agriseg.reliability import check_chroma, check_index_gap, check_rows, thresholds
from agriseg.segmentation.calibration import read_calibration

SIZE = 512


def survey(tmp_path: Path, seed: int, **overrides: object) -> tuple[Path, np.ndarray]:
    """A generated survey's image and its labels (diseased plants as crop)."""
    params = draw_params(seed, SIZE, SIZE, **overrides)
    paths = write_survey(generate_survey(params, seed), tmp_path, f"s{seed}")
    with rasterio.open(paths.labels) as src:
        labels = src.read(1)
    return paths.image, np.where(labels == DISEASED, CROP, labels)


def run(run_cli, image: Path, out: Path, model: str) -> tuple[np.ndarray, dict]:
    assert run_cli("run", image, "--model", model, "--out", out, "--quiet", "--no-preview") == 0
    with rasterio.open(out / f"{image.stem}.classes.tif") as src:
        classes = src.read(1)
    summary = json.loads((out / f"{image.stem}.summary.json").read_text())
    return classes, summary


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_listed_and_resolved_without_weights(run_cli, capsys):
    names = {m.name for m in shipped_models()}
    assert {"vegetation", "rows"} <= names
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert "vegetation-index" in out and "crop-rows" in out
    weights, meta = find_model("rows")
    assert meta.classes.names == ("soil", "crop", "weed", "plants_off_rows")
    assert resolve_engine("auto", "cpu", weights) == "index"
    with pytest.raises(InputError, match="no network"):
        resolve_engine("onnx", "cpu", weights)
    with pytest.raises(Exception, match="no weights"):
        load_model("vegetation")


def test_vegetation_model_on_rgb_survey(run_cli, tmp_path):
    image, truth = survey(tmp_path, 30101, gsd_m=0.02, row_angle_deg=35.0)
    classes, summary = run(run_cli, image, tmp_path / "out", "vegetation")
    assert summary["parameters"]["engine"] == "index"
    assert summary["model"]["name"] == "vegetation"
    # Yellow weeds and diseased plants, a third of this survey's vegetation, fall partly
    # below the green contrast (see docs/labelfree.md).
    assert iou(classes == 1, truth != SOIL) > 0.65
    assert summary["vegetation_index"]["index"] == "cive"
    assert summary["vegetation_index"]["gap"] > 1.5
    # The products of any run: polygons (vegetation has the crop role) and cover.
    assert summary["health"]["vegetation_cover"] == pytest.approx((classes == 1).mean(), abs=0.02)


def test_vegetation_model_uses_nir_when_there(run_cli, tmp_path):
    image, truth = survey(tmp_path, 30102, gsd_m=0.02, multispectral=True)
    classes, summary = run(run_cli, image, tmp_path / "out", "vegetation")
    assert summary["model"]["bands"] == ["red", "green", "blue", "nir"]
    assert summary["vegetation_index"]["index"] == "ndvi"
    assert iou(classes == 1, truth != SOIL) > 0.8


@pytest.mark.parametrize("angle", [20.0, 125.0])
def test_rows_model_on_rotated_rows(run_cli, tmp_path, angle):
    image, truth = survey(
        tmp_path, 30103, gsd_m=0.015, row_angle_deg=angle, weed_density=0.08, disease_foci=0
    )
    classes, summary = run(run_cli, image, tmp_path / "out", "rows")
    rows = summary["rows"]
    params = draw_params(30103, SIZE, SIZE, gsd_m=0.015)
    # Direction is axial: 0 and 180 are the same rows.
    off = abs((rows["direction_deg"] - angle + 90) % 180 - 90)
    assert off < 3
    assert rows["spacing_m"] == pytest.approx(params.row_spacing_m, rel=0.05)
    assert rows["found_share"] > 0.9
    assert 0 < rows["regularity"] <= 1
    assert iou(classes == 1, truth == CROP) > 0.75
    assert iou(classes == 2, truth == WEED) > 0.4
    assert (classes != NODATA).all()


def test_rows_model_follows_curved_rows(run_cli, tmp_path):
    # Rows bent on arcs of 15 m radius: over the survey's 7.7 m they drift by half a
    # row spacing and more from a straight line.
    image, truth = survey(
        tmp_path, 30104, gsd_m=0.015, row_angle_deg=60.0, row_curvature=1 / 15, disease_foci=0
    )
    classes, summary = run(run_cli, image, tmp_path / "out", "rows")
    assert summary["rows"]["found_share"] > 0.9
    assert iou(classes == 1, truth == CROP) > 0.7


def test_rowless_survey_gets_no_invented_weeds(run_cli, tmp_path):
    image, truth = survey(tmp_path, 30105, gsd_m=0.015, layout="scattered", weed_density=0.05)
    classes, summary = run(run_cli, image, tmp_path / "out", "rows")
    assert summary["rows"]["found_share"] < 0.2
    assert (classes == 2).mean() < 0.01  # weeds: at most stray pixels
    # The plants are there, as plants off rows (neither crop nor weed).
    assert iou((classes == 3) | (classes == 1), truth != SOIL) > 0.7
    off_rows = next(c for c in summary["classes"] if c["class"] == "plants_off_rows")
    assert off_rows["role"] == "other" and off_rows["fraction"] > 0.1


def test_find_rows_on_stripes():
    yy, xx = np.mgrid[0:256, 0:256]
    angle = np.radians(30.0)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    stripes = np.abs(((v / 20.0) % 1.0) - 0.5) > 0.3  # rows 20 px apart, 8 px wide
    rows = find_rows(stripes)
    assert rows.found
    assert rows.spacing == pytest.approx(20.0, rel=0.02)
    assert (np.degrees(rows.angle) - 30.0 + 90) % 180 - 90 == pytest.approx(0, abs=1.5)
    crop, weed = label_rows(stripes, rows)
    assert crop.sum() > 0.95 * stripes.sum() and not weed.any()
    # A plant between two rows is weed.
    with_weed = stripes.copy()
    between = np.argwhere(np.abs(((v / 20.0) % 1.0) - 0.5) < 0.05)
    centre = between[np.argmin(np.abs(between - 128).sum(axis=1))]
    with_weed[centre[0] - 2 : centre[0] + 2, centre[1] - 2 : centre[1] + 2] = True
    crop, weed = label_rows(with_weed, find_rows(with_weed))
    assert weed[centre[0], centre[1]]


def test_find_rows_none_in_scattered_plants():
    rng = np.random.default_rng(0)
    plants = np.zeros((256, 256), bool)
    for y, x in rng.integers(4, 252, (60, 2)):
        plants[y - 3 : y + 4, x - 3 : x + 4] = True
    assert not find_rows(plants).found


def test_bench_accepts_index_models(run_cli, tmp_path, capsys):
    assert run_cli("bench", "--model", "vegetation", "--size", "256") == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["engine"] == "index"
    assert figures["model_only_s"] > 0


def test_row_labels_keep_sure_pixels_and_small_weeds_only():
    classes = np.zeros((12, 12), np.uint8)
    classes[:, 4:8] = 1  # a crop row
    classes[1:3, 10:12] = 2  # a small weed between the rows
    classes[5, 8] = 2  # a weed touching the row
    classes[9:12, 0:3] = 3  # plants off rows
    labels = row_labels(classes)
    assert labels[6, 5] == 1 and labels[6, 1] == 0 and labels[6, 4] == 1
    assert (labels[1:3, 10:12] == 2).all()  # a 2 px weed keeps its label
    assert labels[5, 8] == NODATA and labels[5, 7] == NODATA  # where crop meets weed
    assert (labels[9:12, 0:3] == NODATA).all()
    # Pixels the run was unsure of (index near its threshold) stay unlabelled.
    confidence = np.full(classes.shape, 95, np.uint8)
    confidence[:, 4] = SURE_CONFIDENCE - 1
    sure = row_labels(classes, confidence)
    assert (sure[:, 4] == NODATA).all() and sure[6, 5] == 1


def test_train_on_the_surveys_own_rows(run_cli, tmp_path, one_torch_thread):
    image, _ = survey(tmp_path, 30106, gsd_m=0.015, row_angle_deg=70.0)
    out = tmp_path / "selfnet"
    args = ["--epochs", "1", "--steps", "2", "--chips-per-step", "2", "--chip-size", "64"]
    assert run_cli("train", image, "--labels", "rows", "--out", out, "--arch", "fcn", *args) == 0
    meta = json.loads((out / "model.json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["soil", "crop", "weed"]
    assert meta["vegetation_mask"] == "index"
    with rasterio.open(tmp_path / "selfnet.row-labels" / f"{image.stem}.row-labels.tif") as src:
        labels = src.read(1)
    assert set(np.unique(labels)) == {0, 1, 2, NODATA}
    # The model runs like any other.
    classes, summary = run(run_cli, image, tmp_path / "run", str(out))
    assert classes.max() <= 2


def test_self_trained_from_default_keeps_its_classes_and_the_index_draws_soil(
    run_cli, tmp_path, one_torch_thread, capsys
):
    image, truth = survey(tmp_path, 30107, gsd_m=0.02, row_angle_deg=120.0)
    out = tmp_path / "selfnet"
    args = ["--epochs", "1", "--steps", "2", "--chips-per-step", "2", "--chip-size", "64"]
    assert (
        run_cli("train", image, "--labels", "rows", "--from", "default", "--out", out, *args) == 0
    )
    meta = json.loads((out / "model.json").read_text())
    # Row labels know soil, crop and weed; the shipped model's diseased class stays.
    assert [c["name"] for c in meta["classes"]] == ["soil", "crop", "weed", "diseased"]
    assert meta["vegetation_mask"] == "index"
    # The validation table scores no class nobody labelled.
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["diseased", "-", "-", "0", "(not", "labelled)"] in table
    classes, _ = run(run_cli, image, tmp_path / "run", str(out))
    vegetation, _ = run(run_cli, image, tmp_path / "veg", "vegetation")
    # Soil is where the index puts it (the network only splits the plants).
    assert ((classes == SOIL) == (vegetation == 0)).mean() > 0.97
    assert iou(truth == SOIL, classes == SOIL) > 0.9


def test_plants_on_index_takes_soil_from_the_index():
    meta = find_model("default")[1]
    raw = np.zeros((3, 64, 64), np.float32)
    raw[:, :, :16] = np.array([0.25, 0.55, 0.2])[:, None, None]  # green leaves
    raw[:, :, 16:] = np.array([0.55, 0.42, 0.3])[:, None, None]  # brown soil
    raw += np.random.default_rng(0).normal(0, 0.01, raw.shape).astype(np.float32)
    mean = np.asarray(meta.normalization.mean, np.float32)[:, None, None]
    std = np.asarray(meta.normalization.std, np.float32)[:, None, None]
    tiles = ((raw - mean) / std)[None]
    probs = np.empty((1, 4, 64, 64), np.float32)
    probs[0, :] = np.array([0.7, 0.2, 0.06, 0.04])[:, None, None]  # the network: "soil"
    out = plants_on_index(probs.copy(), tiles, meta)[0]
    assert (out[0, :, :16] < 0.05).all()
    assert (out[0, :, 16:] > 0.5).mean() > 0.97 and out[0, :, 16:].mean() > 0.9
    assert np.allclose(out.sum(axis=0), 1, atol=1e-5)
    # The plants share the vegetation in the network's proportions.
    assert np.allclose(out[1, :, :16] / out[2, :, :16], 0.2 / 0.06, rtol=1e-3)


def _grey_lowlight(image: Path, out: Path) -> Path:
    """A grey, low-light copy of ``image`` (luma at 30%): no colour for the index."""
    with rasterio.open(image) as src:
        rgb, profile = src.read().astype("float32"), src.profile
    grey = 0.3 * (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.repeat(grey[None], 3, axis=0).round().astype("uint8"))
    return out


def test_rows_verdict_ok_on_row_crop(run_cli, tmp_path):
    image, _ = survey(tmp_path, 30107, gsd_m=0.02, row_angle_deg=50.0)
    _, summary = run(run_cli, image, tmp_path / "out", "rows")
    reliability = summary["reliability"]
    assert reliability["verdict"] == "ok", reliability["reasons"]
    # Its own evidence, not the network checks.
    assert set(reliability["checks"]) == {"scale", "input", "index_gap", "chroma", "rows"}
    assert reliability["checks"]["rows"]["found_share"] == summary["rows"]["found_share"]
    assert reliability["calibration"].endswith("calibration/rows.json")


def test_rows_verdict_doubts_a_rowless_survey(run_cli, tmp_path):
    image, _ = survey(tmp_path, 30108, gsd_m=0.02, layout="scattered")
    _, summary = run(run_cli, image, tmp_path / "out", "rows")
    reliability = summary["reliability"]
    assert reliability["verdict"] != "ok"
    assert reliability["checks"]["rows"]["level"] == "doubtful"
    assert "rows found on only" in reliability["reasons"][0]
    # The index itself separated the plants well: only the rows are in doubt.
    assert reliability["checks"]["index_gap"]["level"] == "ok"


def test_vegetation_verdict_on_grey_low_light_copy(run_cli, tmp_path):
    image, _ = survey(tmp_path, 30109, gsd_m=0.02)
    _, summary = run(run_cli, image, tmp_path / "out", "vegetation")
    assert summary["reliability"]["verdict"] == "ok", summary["reliability"]["reasons"]
    # The model IS the index: no model-vs-index, confidence or colour check.
    assert set(summary["reliability"]["checks"]) == {"scale", "input", "index_gap", "chroma"}
    dark = _grey_lowlight(image, tmp_path / "dark.tif")
    _, summary = run(run_cli, dark, tmp_path / "dark", "vegetation")
    reliability = summary["reliability"]
    # The index's own separation does not always fall (brightness alone can split
    # dark plants from light soil); the missing colour is what gives it away.
    assert reliability["verdict"] == "unreliable"
    assert reliability["checks"]["chroma"]["level"] == "unreliable"
    assert "almost no colour" in reliability["reasons"][0]


def test_index_models_need_no_gsd(run_cli, tmp_path):
    # A plain photo (no CRS, no GSD): the index does not depend on the pixel size.
    image, _ = survey(tmp_path, 30110, gsd_m=0.02)
    with rasterio.open(image) as src:
        rgb = src.read()
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.moveaxis(rgb, 0, -1)).save(photo, quality=95)
    _, summary = run(run_cli, photo, tmp_path / "out", "vegetation")
    assert summary["reliability"]["checks"]["scale"]["level"] == "ok"
    assert summary["reliability"]["verdict"] == "ok", summary["reliability"]["reasons"]


def test_index_calibrations_list_their_checks():
    for name, used in (("vegetation", 4), ("rows", 5)):
        weights, _ = find_model(name)
        calibration = read_calibration(weights)
        assert calibration.any_gsd and len(calibration.checks_used) == used
        limits = thresholds(calibration)
        # Thresholds sit below every held-out row-crop survey's (the measured minima).
        ranges = calibration.data["checks_measured"]["ranges"]["in-domain"]
        assert limits["index_gap"]["doubtful_gap"] < ranges["gap"][0]
        assert limits["chroma"]["unreliable_chroma"] < limits["chroma"]["doubtful_chroma"]
    gap = limits["index_gap"]["unreliable_gap"]
    assert check_index_gap({"index": "cive", "gap": gap - 0.1}, limits["index_gap"]).level == (
        "unreliable"
    )
    assert check_chroma({"index": "ndvi", "gap": 4.0, "chroma": None}, limits["chroma"]).level == (
        "ok"
    )
    found = {"found_share": 0.4, "regularity": 0.5}
    check = check_rows(found, limits["rows"])
    assert check.level == "doubtful" and "rows found on only 40% of the survey" in check.reason
    assert check_rows({"found_share": 0.95, "regularity": None}, limits["rows"]).level == "doubtful"
    assert check_rows({"found_share": 0.95, "regularity": 0.5}, limits["rows"]).level == "ok"

"""The reliability verdict: its checks alone, then real runs in and out of the
model's domain, where users see the verdict, and the gate of plants and prescribe."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from PIL import Image

from agriseg.health.reliability_stamps import BANNER_COLOURS
from agriseg.health.verdict import Reliability, judge
from agriseg.learning.survey_files import write_survey
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.models.registry import find_model
from agriseg.models.vegetation import VegetationHistogram, compute_index
from agriseg.reliability import (
    DEFAULT_THRESHOLDS,
    RunEvidence,
    check_scale,
    check_vegetation,
    vegetation_values,
)
from agriseg.segmentation.calibration import Calibration, ScaleRange, read_calibration
from agriseg.segmentation.scale import ScalePolicy, decide_scale

PEANUT = Path("/work/shared/data/peanut/images")
FAST = ("--device", "cpu", "--quiet")


# -- the checks alone --------------------------------------------------------------


def test_index_threshold_falls_between_soil_and_plants_and_agreement_is_exact():
    rng = np.random.default_rng(0)
    soil = rng.normal(-0.3, 0.05, 9000)
    plants = rng.normal(0.6, 0.08, 1000)
    values = np.concatenate([soil, plants]).astype("float32")
    model = np.zeros(values.size, dtype=bool)
    model[9000:9500] = True  # the model sees half the plants
    histogram = VegetationHistogram("exgr")
    histogram.add(values[:5000], model[:5000])  # block by block, as in a run
    histogram.add(values[5000:], model[5000:])
    sep = histogram.separation()
    assert sep is not None
    assert -0.05 <= sep.threshold <= 0.3
    assert sep.fraction == pytest.approx(0.1, abs=0.002)
    assert sep.other_fraction == pytest.approx(0.05, abs=1e-4)
    assert sep.iou == pytest.approx(0.5, abs=0.01)
    assert sep.gap > 5


def test_exgr_keeps_bright_reddish_soil_out_and_green_plants_in():
    bands = np.array([[[200, 60]], [[170, 150]], [[140, 50]]], dtype="float32")  # soil, leaf
    index = compute_index("exgr", bands)
    assert index[0, 0] < 0 < index[0, 1]


def test_vegetation_disagreement_is_unreliable_and_agreement_ok():
    limits = DEFAULT_THRESHOLDS["vegetation"]
    histogram = VegetationHistogram("exgr")
    values = np.r_[np.full(800, -0.3), np.full(200, 0.5)].astype("float32")
    histogram.add(values, np.r_[np.zeros(800, bool), np.ones(200, bool)])
    agree = check_vegetation(vegetation_values(histogram.separation()), limits)
    assert agree.level == "ok" and agree.reason is None
    histogram = VegetationHistogram("exgr")
    histogram.add(values, np.r_[np.ones(500, bool), np.zeros(500, bool)])  # plants on soil
    disagree = check_vegetation(vegetation_values(histogram.separation()), limits)
    assert disagree.level == "unreliable"
    assert "20% vegetation where the model finds 50%" in str(disagree.reason)


def test_scale_check_against_the_measured_range_finer_and_coarser():
    calibration = Calibration(Path("x.json"), None, ScaleRange(0.01, 0.04, 0.005, 0.08), {}, {})

    def level(gsd: float | None) -> str:
        return check_scale(decide_scale(gsd, 0.0292, "off"), calibration, 0.0292).level

    assert level(0.02) == "ok"
    assert level(0.007) == level(0.06) == "doubtful"
    assert level(0.001) == level(0.3) == level(10.0) == "unreliable"
    unknown = check_scale(decide_scale(None, 0.0292), calibration, 0.0292)
    assert unknown.level == "doubtful" and "plain photo" in str(unknown.reason)


def test_two_independent_doubts_make_a_map_unreliable():
    from agriseg.health.verdict import Check

    one = [Check("vegetation", "doubtful", "a"), Check("scale", "ok", None)]
    assert judge(one) == "doubtful"
    assert judge([*one, Check("colour", "doubtful", "b")]) == "unreliable"
    assert judge([Check("scale", "doubtful", "a"), Check("input", "doubtful", "b")]) == "doubtful"


def test_measured_policy_drives_auto_and_explicit_targets_stay_within_limits():
    policy = ScalePolicy(0.005, 0.04, 0.01, 0.029)
    assert not decide_scale(0.007, 0.0292, "auto", policy).resampled
    assert decide_scale(0.002, 0.0292, "auto", policy).target_gsd_m == pytest.approx(0.008)
    assert decide_scale(0.06, 0.0292, "auto", policy).target_gsd_m == pytest.approx(0.029)
    assert decide_scale(0.02, 0.0292, 0.04).target_gsd_m == pytest.approx(0.04)
    assert decide_scale(0.002, 0.0292, 0.04).target_gsd_m == pytest.approx(0.008)


@pytest.mark.parametrize("model", ["agriseg-unet", "agriseg-pspnet"])
def test_shipped_models_carry_their_calibration(model):
    weights, _ = find_model(model)
    calibration = read_calibration(weights)
    assert calibration.calibrated
    assert calibration.policy is not None and calibration.scale_range is not None
    ranges = calibration.scale_range
    assert ranges.usable_from_m <= ranges.holds_from_m < ranges.holds_to_m <= ranges.usable_to_m
    assert {"vegetation", "confidence", "colour"} <= set(calibration.checks)


# -- real runs ---------------------------------------------------------------------


def _survey(folder: Path, seed: int, gsd: float, size: int = 320) -> Path:
    params = draw_params(seed, size, size, gsd_m=gsd)
    return write_survey(generate_survey(params, seed), folder, f"survey_{seed}").image


def _copy(src: Path, dst: Path, data: np.ndarray | None = None, gsd: float | None = None) -> Path:
    with rasterio.open(src) as opened:
        profile = opened.profile
        pixels = opened.read() if data is None else data
    if gsd is not None:
        t = profile["transform"]
        profile["transform"] = Affine(gsd, 0, t.c, 0, -gsd, t.f)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(pixels.astype("uint8"))
    return dst


@pytest.fixture(scope="module")
def surveys(tmp_path_factory) -> dict[str, Path]:
    """An in-domain survey (seed 30901, 2.5 cm), the same field labelled 30 cm, and a
    grey, low-light copy."""
    folder = tmp_path_factory.mktemp("reliability")
    image = _survey(folder, 30901, 0.025)
    with rasterio.open(image) as src:
        rgb = src.read().astype("float32")
    grey = np.repeat((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None] * 0.3, 3, axis=0)
    return {
        "in": image,
        "30cm": _copy(image, folder / "aerial.tif", gsd=0.3),
        "dark": _copy(image, folder / "dark.tif", np.clip(grey, 0, 255)),
    }


@pytest.fixture(scope="module")
def in_domain_run(surveys, tmp_path_factory) -> tuple[Path, str]:
    from agriseg_cli.main import main

    out = tmp_path_factory.mktemp("in_run")
    assert main(["run", str(surveys["in"]), "--out", str(out), *FAST]) == 0
    return out, surveys["in"].stem


@pytest.fixture(scope="module")
def aerial_run(surveys, tmp_path_factory) -> tuple[Path, str]:
    from agriseg_cli.main import main

    out = tmp_path_factory.mktemp("aerial_run")
    assert main(["run", str(surveys["30cm"]), "--out", str(out), *FAST]) == 0
    return out, surveys["30cm"].stem


def _summary(run: tuple[Path, str]) -> dict:
    out, stem = run
    return json.loads((out / f"{stem}.summary.json").read_text())


def test_in_domain_survey_is_not_unreliable(in_domain_run):
    reliability = _summary(in_domain_run)["reliability"]
    assert reliability["verdict"] in ("ok", "doubtful")
    checks = reliability["checks"]
    assert set(checks) >= {"scale", "input", "vegetation", "confidence", "colour"}
    assert checks["scale"]["level"] == "ok"
    assert checks["vegetation"]["iou"] > 0.5


def test_the_same_field_at_30_cm_is_unreliable_and_says_why(aerial_run):
    reliability = _summary(aerial_run)["reliability"]
    assert reliability["verdict"] == "unreliable"
    assert any("30.0 cm" in r and "coarser" in r for r in reliability["reasons"])


def test_grey_low_light_copy_is_not_trusted(surveys, tmp_path: Path, run_cli):
    out = tmp_path / "out"
    assert run_cli("run", surveys["dark"], "--out", out, *FAST, "--no-preview") == 0
    reliability = json.loads((out / "dark.summary.json").read_text())["reliability"]
    assert reliability["verdict"] in ("doubtful", "unreliable")
    assert reliability["checks"]["colour"]["level"] != "ok"


@pytest.mark.skipif(not PEANUT.is_dir(), reason="real peanut photos not available")
@pytest.mark.parametrize("gsd", [None, "0.001"])
def test_real_close_up_photo_is_not_trusted(gsd, tmp_path: Path, run_cli, capsys):
    args = () if gsd is None else ("--gsd", gsd)
    out = tmp_path / "out"
    assert run_cli("run", PEANUT / "0010.jpg", "--out", out, "--device", "cpu", *args) == 0
    reliability = json.loads((out / "0010.summary.json").read_text())["reliability"]
    assert reliability["verdict"] in ("doubtful", "unreliable")
    if gsd is not None:
        assert reliability["verdict"] == "unreliable"
        assert reliability["checks"]["scale"]["level"] == "unreliable"
        assert json.loads((out / "0010.summary.json").read_text())["scale"]["unreliable"]
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(reliability["verdict"].upper())
    with Image.open(out / "0010.preview.png") as png:  # the photo's preview has its banner
        banner = png.convert("RGB").getpixel((png.width - 2, 1))
    assert banner == BANNER_COLOURS[reliability["verdict"]]


# -- where users see it ------------------------------------------------------------


def test_verdict_leads_the_printed_summary_line(surveys, tmp_path: Path, run_cli, capsys):
    assert run_cli("run", surveys["30cm"], "--out", tmp_path / "o", "--device", "cpu") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "vegetation cover" in x)
    assert line.startswith("UNRELIABLE (model out of its depth: ")
    assert line.index("UNRELIABLE") < line.index("vegetation cover")


def test_preview_carries_a_banner_in_the_verdicts_colour(aerial_run):
    out, stem = aerial_run
    with Image.open(out / f"{stem}.preview.png") as png:
        rgb = np.asarray(png.convert("RGB"))
    with rasterio.open(out / f"{stem}.classes.tif") as src:
        width = src.width
    assert rgb.shape[1] == width and rgb.shape[0] > src.height  # added above the map
    assert tuple(rgb[1, -2]) == BANNER_COLOURS["unreliable"]


def test_geopackage_holds_the_verdict(aerial_run):
    out, stem = aerial_run
    gpkg = out / f"{stem}.health.gpkg"
    table = pyogrio.read_dataframe(gpkg, layer="reliability")
    verdict = table.set_index("check").loc["verdict"]
    assert verdict["level"] == "unreliable" and "coarser" in verdict["reason"]
    info = pyogrio.read_info(gpkg, layer="health")
    assert info["layer_metadata"]["DESCRIPTION"].startswith("reliability: UNRELIABLE")
    with sqlite3.connect(gpkg) as db:
        kinds = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
    assert kinds["reliability"] == "attributes"


def test_batch_manifest_and_table_carry_the_verdict(surveys, tmp_path: Path, run_cli, capsys):
    folder = tmp_path / "surveys"
    folder.mkdir()
    _copy(surveys["30cm"], folder / "aerial.tif")
    out = tmp_path / "results"
    assert run_cli("batch", folder, "--out", out, "--device", "cpu", "--no-preview") == 0
    table = capsys.readouterr().out
    assert "verdict" in table and "UNRELIABLE" in table
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["surveys"]["aerial"]["reliability"]
    assert entry["verdict"] == "unreliable" and entry["reasons"]


# -- nothing acts on an unreliable map ---------------------------------------------


def _products(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffixes))


def test_plants_refuses_an_unreliable_run_and_force_records_the_override(
    aerial_run, run_cli, capsys
):
    out, stem = aerial_run
    assert run_cli("plants", out, "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UNRELIABLE" in err[0] and "coarser" in err[0]
    assert _products(out, (".plants.gpkg", ".plants.json")) == []
    assert run_cli("plants", out, "--quiet", "--force") == 0
    record = json.loads((out / f"{stem}.plants.json").read_text())["reliability"]
    assert record["verdict"] == "unreliable" and record["forced"] is True
    table = pyogrio.read_dataframe(out / f"{stem}.plants.gpkg", layer="reliability")
    assert "override" in set(table["check"])


def test_prescribe_refuses_an_unreliable_run_and_force_records_the_override(
    aerial_run, run_cli, capsys, tmp_path: Path
):
    out, stem = aerial_run
    rx = tmp_path / "rx"
    assert run_cli("prescribe", out, "--out", rx, "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to prescribe" in err[0]
    assert not rx.exists() or not any(rx.iterdir())
    assert run_cli("prescribe", out, "--out", rx, "--quiet", "--force") == 0
    gpkg = rx / f"{stem}.prescription.gpkg"
    table = pyogrio.read_dataframe(gpkg, layer="reliability")
    assert "override" in set(table["check"])


def test_plants_refuses_rows_closer_than_the_imagery_resolves(tmp_path: Path):
    from agriseg.errors import UnreliableMapError
    from agriseg.field.trust import check_resolved

    with pytest.raises(UnreliableMapError, match=r"plant spacing 2\.0 px is below the 4 px"):
        check_resolved(tmp_path / "x.classes.tif", 25.0, 2.0, force=False)
    forced = check_resolved(tmp_path / "x.classes.tif", 25.0, 2.0, force=True)
    assert "override" in forced


def test_headline_round_trips_through_summary_json(aerial_run):
    data = _summary(aerial_run)["reliability"]
    again = Reliability.from_json(data)
    assert again.to_json()["reasons"] == data["reasons"]
    assert again.headline().startswith("UNRELIABLE (model out of its depth: ")


def test_batch_refuses_plants_for_an_unreliable_survey_only(
    surveys, tmp_path: Path, run_cli, capsys
):
    folder = tmp_path / "surveys"
    folder.mkdir()
    _copy(surveys["30cm"], folder / "aerial.tif")
    _copy(surveys["in"], folder / "good.tif")
    out = tmp_path / "results"
    args = ("batch", folder, "--out", out, "--device", "cpu", "--no-preview", "--plants")
    assert run_cli(*args) == 2
    refused = [line for line in capsys.readouterr().err.splitlines() if "refusing" in line]
    assert len(refused) == 1 and "aerial.summary.json" in refused[0]
    assert not list((out / "aerial").glob("*.plants.*"))
    assert (out / "good" / "good.plants.json").is_file()


def test_evidence_gathered_by_the_chunks_is_the_whole_inputs(tmp_path: Path) -> None:
    """The chunk and stitch tasks note the evidence from the pixels they read; it must
    be what the finished input and rasters give when read whole."""
    from conftest import field_image, write_raster

    from agriseg.config import RunConfig
    from agriseg.io.atomic import output_transaction
    from agriseg.io.raster import open_raster
    from agriseg.run import _segment, plan_run
    from agriseg.segmentation.execution import dask_client

    image = field_image(300, 370, seed=3)
    mask = np.ones(image.shape[1:], bool)
    mask[:60, :90] = False  # an irregular flight area
    path = write_raster(tmp_path / "field.tif", image, mask=mask)
    config = RunConfig(device="cpu", tile_size=128, overlap=32, batch_size=2)
    plan = plan_run(path, tmp_path / "out", config)
    plan.out_dir.mkdir()
    evidence = RunEvidence(plan.info, plan.meta)
    with dask_client() as client, output_transaction() as transaction:
        _, _, writer = _segment(plan, client, transaction, None, evidence, None)
        with rasterio.open(writer.staged["classes"]) as src:
            classes = src.read(1)
        with rasterio.open(writer.staged["confidence"]) as src:
            confidence = src.read(1)
    pixels = open_raster(path, plan.meta.bands).path
    with rasterio.open(pixels) as src:
        data = src.read().astype("float32")
    known = classes != 255
    assert known.sum() == mask.sum() == evidence.valid
    assert np.allclose(evidence.band_sum, data[:, known].sum(axis=1, dtype="float64"))
    assert np.array_equal(evidence.confidence, np.bincount(confidence[known], minlength=101))
    reference = VegetationHistogram(evidence.index)
    index = compute_index(evidence.index, data)
    index[~known] = np.nan
    vegetation = np.isin(classes, [c.id for c in plan.meta.classes if c.role != "background"])
    reference.add(index, vegetation)
    assert np.array_equal(evidence.histogram.all, reference.all)
    assert np.array_equal(evidence.histogram.inside, reference.inside)

"""Classes belong to the model: names, colours and roles reach every output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from test_qgis import check_class_style

from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList, guess_role
from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.health.health_stats import health_indices, health_summary
from agriseg.health.products import HealthOptions
from agriseg.learning.synthetic import SPECIES_CLASSES, draw_params, generate_survey, write_survey
from agriseg.models.architectures import build_model
from agriseg.models.meta import ModelMeta
from agriseg.models.registry import save_checkpoint, shipped_dir
from agriseg.run import segment_raster

FIVE = "soil:background,maize:crop:#f0e020,grass_weed:weed,broadleaf_weed:weed:#ff0000,thistle"


def test_classes_parse_inline_with_roles_colours_and_guesses() -> None:
    classes = ClassList.parse(FIVE)
    assert classes.names == ("soil", "maize", "grass_weed", "broadleaf_weed", "thistle")
    assert [c.role for c in classes] == ["background", "crop", "weed", "weed", "weed"]
    assert classes.by_name("Maize").colour == (240, 224, 32)
    assert classes.by_name("broadleaf_weed").hex == "#ff0000"
    # Colours not given are distinct within a role.
    weeds = [classes.by_name(n).colour for n in ("grass_weed", "broadleaf_weed", "thistle")]
    assert len(set(weeds)) == 3


def test_classes_file_and_legacy_name_lists(tmp_path: Path) -> None:
    path = tmp_path / "classes.json"
    path.write_text(
        json.dumps(
            [
                {"name": "bare", "role": "background"},
                {"name": "wheat", "color": "#00ff00"},
                {"name": "water", "role": "other", "colour": "0,0,255"},
            ]
        )
    )
    classes = ClassList.parse(str(path))
    assert [(c.name, c.role, c.hex) for c in classes][1:] == [
        ("wheat", "crop", "#00ff00"),
        ("water", "other", "#0000ff"),
    ]
    assert ClassList.from_json(["soil", "crop", "weed", "diseased"]) == DEFAULT_CLASSES
    assert ClassList.from_json(classes.to_json()) == classes


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("soil", "background"),
        ("bare_ground", "background"),
        ("grass_weed", "weed"),
        ("Thistle", "weed"),
        ("late_blight", "disease"),
        ("crop_residue", "other"),
        ("water", "other"),
        ("sugar_beet", "crop"),
    ],
)
def test_roles_are_guessed_from_names(name: str, role: str) -> None:
    assert guess_role(name) == role


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soil:dirt", "unknown role 'dirt'"),
        ("soil,crop,soil", "repeated: soil"),
        ("soil:#12", "colour '#12'"),
        ("crop name", "letters, digits"),
        ("missing.json", "no such classes file"),
    ],
)
def test_bad_class_lists_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ClassList.parse(text)


def test_weed_pressure_sums_every_weed_class() -> None:
    classes = ClassList.parse(FIVE)
    areas = np.array([50.0, 30.0, 6.0, 3.0, 1.0])  # soil, maize, three weeds
    out = health_indices(areas, classes)
    assert out["weed_pressure"] == pytest.approx(10 / 40)
    assert np.isnan(out["disease_incidence"])
    assert out["health_score"] == pytest.approx(75.0)
    summary = health_summary(areas, classes)
    assert summary["roles"]["weed"]["area_m2"] == pytest.approx(10.0)
    assert set(summary["roles"]) == {"background", "crop", "weed"}
    assert summary["classes"]["thistle"]["role"] == "weed"


def _five_class_checkpoint(path: Path) -> ClassList:
    classes = ClassList.parse(FIVE)
    meta = ModelMeta(name=path.name, architecture="unet", encoder="mobilenet_v2", classes=classes)
    save_checkpoint(build_model(meta), meta, path)
    return classes


def test_a_run_writes_the_models_classes_everywhere(tmp_path: Path) -> None:
    classes = _five_class_checkpoint(tmp_path / "five")
    params = draw_params(3, 96, 96, weed_species=True, disease_foci=0)
    survey = write_survey(generate_survey(params, 3), tmp_path, "field")
    config = RunConfig(
        model=str(tmp_path / "five"),
        tile_size=64,
        overlap=16,
        health=HealthOptions(grid_m=0.5, min_area_m2=0),
    )
    result = segment_raster(survey.image, tmp_path / "out", config)
    out = tmp_path / "out"
    with rasterio.open(result.outputs["classes"]) as src:
        tags, cmap = src.tags(), src.colormap(1)
        data = src.read(1)
    assert ClassList.from_tags(tags, cmap) == classes
    assert cmap[3][:3] == (255, 0, 0) and cmap[NODATA][3] == 0
    assert set(np.unique(data)) <= set(range(5))
    check_class_style((out / "field.health.qml").read_text(encoding="utf-8"), classes)
    styles = pyogrio.read_dataframe(out / "field.health.gpkg", layer="layer_styles")
    health_qml = styles.loc[styles["f_table_name"] == "health", "styleQML"].iloc[0]
    check_class_style(health_qml, classes)
    summary = json.loads((out / "field.summary.json").read_text())
    assert [c["class"] for c in summary["classes"]] == list(classes.names)
    assert [c["role"] for c in summary["classes"]] == [c.role for c in classes]
    assert list(summary["health"]["classes"]) == list(classes.names)
    assert summary["model"]["classes"] == classes.to_json()
    polygons = pyogrio.read_dataframe(out / "field.health.gpkg", layer="health")
    assert set(polygons["class"]) <= set(classes.names)
    # An RGB survey gets the RGB vegetation index, per polygon and for the survey.
    assert "mean_exg" in polygons.columns
    assert list(summary["health"]["vegetation_indices"]) == ["exg"]
    zones = pyogrio.read_dataframe(out / "field.health.gpkg", layer="zones")
    assert {f"{n}_share" for n in classes.names} <= set(zones.columns)
    weeds = sum(summary["health"]["classes"][n]["area_m2"] for n in classes.names[2:])
    crop = summary["health"]["classes"]["maize"]["area_m2"]
    if weeds + crop > 0.05:  # areas are rounded to 1e-4 m²
        assert summary["health"]["weed_pressure"] == pytest.approx(weeds / (weeds + crop), abs=1e-3)


def test_a_checkpoint_with_a_plain_class_name_list_still_runs(tmp_path: Path) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(shipped_dir() / f"agriseg-pspnet{suffix}", tmp_path / f"old{suffix}")
    meta_path = tmp_path / "old.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = ["soil", "crop", "weed", "diseased"]  # as written before roles existed
    meta_path.write_text(json.dumps(meta))
    params = draw_params(4, 64, 64)
    survey = write_survey(generate_survey(params, 4), tmp_path, "f")
    config = RunConfig(model=str(tmp_path / "old"), tile_size=64, overlap=16)
    result = segment_raster(survey.image, tmp_path / "out", config)
    with rasterio.open(result.outputs["classes"]) as src:
        assert ClassList.from_tags(src.tags(), src.colormap(1)) == DEFAULT_CLASSES
    assert result.summary["health"]["classes"]["diseased"]["role"] == "disease"


def test_species_surveys_label_each_weed_kind(tmp_path: Path) -> None:
    params = draw_params(5, 256, 256, weed_species=True, disease_foci=0, weed_density=0.1)
    survey = generate_survey(params, 5)
    assert survey.classes == SPECIES_CLASSES
    present = set(np.unique(survey.labels).tolist())
    assert {0, 1} <= present and len(present & {2, 3, 4}) >= 2
    with pytest.raises(InputError, match="disease_foci=0"):
        generate_survey(draw_params(5, 32, 32, weed_species=True, disease_foci=2), 5)


def test_five_class_model_trains_runs_and_evaluates_with_its_classes(
    tmp_path: Path, run_cli
) -> None:
    """Acceptance: custom names, colours and roles from training to every output."""
    spec = [
        {"name": "soil", "role": "background", "colour": "#8b5a2b"},
        {"name": "maize", "role": "crop", "colour": "#00c800"},
        {"name": "grass_weed", "role": "weed", "colour": "#ff00ff"},
        {"name": "broadleaf_weed", "role": "weed", "colour": "#ff0000"},
        {"name": "thistle", "role": "weed", "colour": "#8000ff"},
    ]
    (tmp_path / "classes.json").write_text(json.dumps(spec))
    classes = ClassList.from_json(spec)
    params = draw_params(8, 160, 160, weed_species=True, disease_foci=0, weed_density=0.12)
    survey = write_survey(generate_survey(params, 8), tmp_path, "farm")
    model = tmp_path / "five"
    assert (
        run_cli(
            "train",
            survey.image,
            "--labels",
            survey.polygons,
            "--classes",
            tmp_path / "classes.json",
            "--out",
            model,
            "--epochs",
            "1",
            "--steps",
            "2",
            "--chip-size",
            "64",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--quiet",
        )  # fmt: skip
        == 0
    )
    out = tmp_path / "run"
    assert (
        run_cli(
            "run",
            survey.image,
            "--model",
            model,
            "--out",
            out,
            "--tile-size",
            "64",
            "--overlap",
            "16",
            "--grid",
            "1",
            "--min-area",
            "0",
            "--device",
            "cpu",
            "--quiet",
        )  # fmt: skip
        == 0
    )
    with rasterio.open(out / "farm.classes.tif") as src:
        assert ClassList.from_tags(src.tags(), src.colormap(1)) == classes
        assert src.colormap(1)[4][:3] == (128, 0, 255)
    check_class_style((out / "farm.health.qml").read_text(encoding="utf-8"), classes)
    styles = pyogrio.read_dataframe(out / "farm.health.gpkg", layer="layer_styles")
    check_class_style(styles.loc[styles["f_table_name"] == "health", "styleQML"].iloc[0], classes)
    summary = json.loads((out / "farm.summary.json").read_text())
    health = summary["health"]
    assert list(health["classes"]) == list(classes.names)
    weeds = sum(
        health["classes"][n]["area_m2"] for n in ("grass_weed", "broadleaf_weed", "thistle")
    )
    plants = weeds + health["classes"]["maize"]["area_m2"]
    assert plants > 0
    assert health["weed_pressure"] == pytest.approx(weeds / plants, abs=1e-3)
    assert health["roles"]["weed"]["area_m2"] == pytest.approx(weeds, abs=1e-3)
    report = tmp_path / "scores.json"
    assert (
        run_cli(
            "evaluate",
            survey.image,
            "--labels",
            survey.polygons,
            "--model",
            model,
            "--json",
            report,
            "--tile-size",
            "64",
            "--overlap",
            "16",
            "--device",
            "cpu",
            "--quiet",
        )  # fmt: skip
        == 0
    )
    scores = json.loads(report.read_text())
    assert list(scores["classes"]) == list(classes.names)
    assert scores["confusion_matrix"]["classes"] == list(classes.names)

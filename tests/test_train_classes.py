"""Models with their own classes: --classes, classes derived from labels, new heads, scores."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import UTM, write_raster
from PIL import Image
from shapely.geometry import box

from agriseg.classes import DEFAULT_CLASSES, ClassList
from agriseg.errors import InputError
from agriseg.learning.evaluation import compare_rasters
from agriseg.learning.labels import label_classes
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.learning.training import Scene, TrainConfig, load_scene, train
from agriseg.models.architectures import with_classes
from agriseg.models.registry import load_model

CUSTOM = "soil:background,maize:crop,grass_weed:weed,broadleaf_weed:weed,thistle:weed"
TINY = ("--epochs", "1", "--steps", "2", "--chip-size", "32", "--chips-per-step", "2")
CPU = ("--device", "cpu", "--threads", "1", "--quiet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def five_class_pair(folder: Path, seed: int, size: int = 128) -> np.ndarray:
    """A photo and an index mask of the five CUSTOM classes; returns the ids."""
    survey = generate_survey(draw_params(seed, size, size), seed)
    ids = survey.labels.copy()
    weed = survey.labels == 2
    cols = np.broadcast_to(np.arange(size) * 3 // size, ids.shape)
    ids[weed] = 2 + cols[weed]  # weeds by column third: grass, broadleaf, thistle
    ids[survey.labels == 3] = 1  # diseased crop is still maize
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(survey.image.transpose(1, 2, 0)).save(folder / f"p{seed}.png")
    Image.fromarray(ids).save(folder / f"p{seed}_mask.png")
    return ids


def test_custom_classes_reach_the_checkpoint_and_the_scores(
    tmp_path: Path, run_cli, capsys
) -> None:
    data = tmp_path / "data"
    truth = five_class_pair(data, 1)
    five_class_pair(data, 2)
    model = tmp_path / "maize"
    code = run_cli(
        "train", str(data / "p?.png"), "--labels", str(data / "*_mask.png"),
        "--classes", CUSTOM, "--out", model, *TINY, *CPU,
    )  # fmt: skip
    assert code == 0
    meta = json.loads((model / "model.json").read_text())
    expected = ClassList.parse(CUSTOM)
    assert meta["classes"] == expected.to_json()
    assert [c["role"] for c in meta["classes"]] == ["background", "crop", "weed", "weed", "weed"]
    assert len({c["colour"] for c in meta["classes"]}) == 5
    assert set(meta["metrics"]["validation"]["classes"]) == set(expected.names)
    net, _ = load_model(model)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    report = tmp_path / "scores.json"
    code = run_cli(
        "evaluate", data / "p1.png", "--labels", data / "p1_mask.png", "--model", model,
        "--json", report, "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    shown = capsys.readouterr().out
    assert "broadleaf_weed" in shown and "thistle" in shown and "diseased" not in shown
    found = json.loads(report.read_text())
    assert found["confusion_matrix"]["classes"] == list(expected.names)
    assert list(found["classes"]) == list(expected.names)
    assert np.array(found["confusion_matrix"]["counts"]).shape == (5, 5)
    assert found["labelled_pixels"] == int((truth != 255).sum())


def test_fine_tuning_to_other_classes_replaces_only_the_head(tmp_path: Path, run_cli) -> None:
    model, meta = load_model("default")
    custom = ClassList.parse(CUSTOM)
    new, new_meta = with_classes(model, meta, custom)
    assert new_meta.classes == custom and new_meta.normalization == meta.normalization
    old_state, new_state = model.state_dict(), new.state_dict()
    for key, value in old_state.items():
        if key.startswith("segmentation_head."):
            assert new_state[key].shape[0] in (5, value.shape[0]) and key in new_state
        else:
            assert torch.equal(new_state[key], value), key
    assert new(torch.zeros(1, 3, 64, 64)).shape[1] == 5
    recoloured = ClassList.parse("soil,crop:#000000,weed,diseased")
    same, _ = with_classes(model, meta, recoloured)
    assert same is model  # same names: the head stays

    data = tmp_path / "data"
    five_class_pair(data, 3)
    out = tmp_path / "ft"
    code = run_cli(
        "train", data / "p3.png", "--labels", data / "p3_mask.png", "--from", "default",
        "--classes", CUSTOM, "--out", out, *TINY, *CPU,
    )  # fmt: skip
    assert code == 0
    tuned, tuned_meta = load_model(out)
    assert tuned_meta.classes.names == custom.names and tuned_meta.architecture == meta.architecture
    assert tuned(torch.zeros(1, 3, 64, 64)).shape[1] == 5


def test_fine_tuning_labels_with_other_names_needs_classes(tmp_path: Path, run_cli, capsys) -> None:
    data = tmp_path / "data"
    five_class_pair(data, 4)
    code = run_cli(
        "train", data / "p4.png", "--labels", data / "p4_mask.png", "--from", "default",
        "--out", tmp_path / "ft", *TINY, *CPU,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "value(s) [4]" in err and "soil, crop, weed, diseased" in err


def _vector(path: Path, names: list[str]) -> Path:
    boxes = [box(500000 + i, 5299990, 500001 + i, 5299991) for i in range(len(names))]
    gpd.GeoDataFrame({"class": names}, geometry=boxes, crs=UTM).to_file(path)
    return path


def test_classes_derived_from_labels(tmp_path: Path) -> None:
    names = ["thistle", "maize", "Maize", "bare_soil", "maize"]
    derived = label_classes([_vector(tmp_path / "b.gpkg", names)])
    assert derived.names in (("bare_soil", "maize", "thistle"), ("bare_soil", "Maize", "thistle"))
    assert [c.role for c in derived] == ["background", "crop", "weed"]
    assert label_classes([_vector(tmp_path / "d.gpkg", ["weed", "Soil"])]) == DEFAULT_CLASSES
    ids = write_raster(tmp_path / "ids.tif", np.array([[[0, 1], [6, 255]]], "uint8"), nodata=255)
    generic = label_classes([ids])
    assert generic.names == tuple(f"class_{k}" for k in range(7))
    assert {c.role for c in generic} == {"other"}
    small = write_raster(tmp_path / "small.tif", np.array([[[0, 2]]], "uint8"))
    assert label_classes([small]) == DEFAULT_CLASSES
    colours = {"maize": (0, 255, 0), "soil": (0, 0, 0)}
    by_colour = label_classes([small], colors=colours)
    assert by_colour.names == ("maize", "soil") and by_colour[0].colour == (0, 255, 0)


def test_class_raster_labels_match_the_model_by_name(tmp_path: Path) -> None:
    pred = write_raster(tmp_path / "pred.tif", np.array([[[0, 1, 2, 3]]], "uint8"))
    # Truth names its ids in another order: id 0 is crop, id 1 soil.
    truth = write_raster(tmp_path / "truth.tif", np.array([[[1, 0, 2, 3]]], "uint8"))
    with rasterio.open(truth, "r+") as dst:
        dst.update_tags(class_0="crop", class_1="soil", class_2="weed", class_3="diseased")
    assert compare_rasters(pred, truth, DEFAULT_CLASSES).miou == 1.0
    with rasterio.open(truth, "r+") as dst:
        dst.update_tags(class_2="thistle", class_3="dock")
    with pytest.raises(InputError, match=r"unknown class value\(s\) \['dock', 'thistle'\]"):
        compare_rasters(pred, truth, DEFAULT_CLASSES)


def test_label_ids_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    survey = generate_survey(draw_params(9, 96, 96), 9)
    image = survey.image.astype("float32")
    scene = Scene(image, survey.labels, "uint8", None, "photo.png")
    config = TrainConfig(classes=ClassList.parse("soil,crop"), epochs=1, chip_size=64,
                         steps_per_epoch=1, chips_per_step=1, val_fraction=0,
                         device="cpu")  # fmt: skip
    with pytest.raises(InputError, match=r"photo.png: labels hold class id\(s\) \[2, 3\]"):
        train([scene], tmp_path / "m", config)


def test_scene_gsd_is_in_ground_metres_whatever_the_crs(tmp_path: Path) -> None:
    # 1e-7 degree pixels near the equator: about 1.1 cm on the ground.
    transform = Affine(1e-7, 0, 10.0, 0, -1e-7, 0.001)
    image = write_raster(tmp_path / "geo.tif", np.full((3, 64, 64), 90, "uint8"),
                         crs="EPSG:4326", transform=transform)  # fmt: skip
    labels = write_raster(tmp_path / "geo.labels.tif", np.ones((1, 64, 64), "uint8"),
                          crs="EPSG:4326", transform=transform)  # fmt: skip
    scene = load_scene(image, labels, ("red", "green", "blue"), TrainConfig())
    assert scene.gsd_m == pytest.approx(0.01113, rel=0.01)
    stated = load_scene(image, labels, ("red", "green", "blue"), TrainConfig(gsd_m=0.03))
    assert stated.gsd_m == 0.03


def three_class_pair(images: Path, masks: Path, seed: int, colours: bool = False) -> np.ndarray:
    """A photo and its mask labelling soil (0), crop (1) and weed (2) only; returns the ids."""
    survey = generate_survey(draw_params(seed, 96, 96), seed)
    ids = np.where(survey.labels == 3, 1, survey.labels).astype("uint8")
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(survey.image.transpose(1, 2, 0)).save(images / f"{seed:04d}.png")
    if colours:  # peanut style: black soil, green crop, red weed
        palette = np.array([[0, 0, 0], [0, 255, 0], [255, 0, 0]], dtype="uint8")
        Image.fromarray(palette[ids]).save(masks / f"{seed:04d}.png")
    else:
        Image.fromarray(ids).save(masks / f"{seed:04d}.png")
    return ids


TINY_NEW = ("--epochs", "1", "--steps", "1", "--chip-size", "64", "--chips-per-step", "2")


def train_folders(run_cli, folder: Path, out: Path, *options: str) -> int:
    """A tiny ``agriseg train`` run on CPU over ``folder/images`` and ``folder/masks``."""
    images, masks = folder / "images", folder / "masks"
    return run_cli("train", images, "--labels", masks, "--out", out, *options, *TINY_NEW, *CPU)


def test_three_labelled_classes_give_a_three_class_model(tmp_path: Path, run_cli) -> None:
    for seed in (11, 12):
        three_class_pair(tmp_path / "images", tmp_path / "masks", seed)
    model = tmp_path / "three"
    code = train_folders(
        run_cli, tmp_path, model, "--val-fraction", "0.2", "--val-block", "32", "--gap", "4"
    )
    assert code == 0
    net, meta = load_model(model)
    assert meta.classes.names == ("soil", "crop", "weed")
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    validation = json.loads((model / "model.json").read_text())["metrics"]["validation"]
    assert set(validation["classes"]) == {"soil", "crop", "weed"}
    assert validation["scored_classes"] == ["soil", "crop", "weed"]


def test_colour_masks_of_two_classes_leave_the_rest_unlabelled(tmp_path: Path, run_cli) -> None:
    truth = three_class_pair(tmp_path / "images", tmp_path / "masks", 13, colours=True)
    model = tmp_path / "two.safetensors"
    code = train_folders(
        run_cli,
        tmp_path,
        model,
        "--label-colors",
        "crop=#00ff00,weed=#ff0000",
        "--val-fraction",
        "0",
    )
    assert code == 0
    meta = json.loads(model.with_suffix(".json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["crop", "weed"]
    counts = meta["training"]["labelled_pixels"]
    assert counts == {"crop": int((truth == 1).sum()), "weed": int((truth == 2).sum())}


def test_a_listed_class_nobody_labelled_is_refused(tmp_path: Path, run_cli, capsys) -> None:
    three_class_pair(tmp_path / "images", tmp_path / "masks", 14)
    code = train_folders(run_cli, tmp_path, tmp_path / "m", "--classes", "soil,crop,weed,diseased")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--classes lists diseased but no label marks it" in err
    assert not (tmp_path / "m").exists()


def test_fine_tuning_leaves_out_the_unlabelled_classes(tmp_path: Path, run_cli, capsys) -> None:
    three_class_pair(tmp_path / "images", tmp_path / "masks", 15)
    model = tmp_path / "ft"
    code = train_folders(run_cli, tmp_path, model, "--from", "default", "--val-fraction", "0")
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: diseased (--from default): no label marks it" in err
    tuned, meta = load_model(model)
    assert meta.classes.names == ("soil", "crop", "weed")
    base, _ = load_model("default")
    # The kept classes keep their trained outputs of the default model's head.
    head = [k for k, v in base.state_dict().items() if k.startswith("segmentation_head.")]
    weights = [k for k in head if base.state_dict()[k].shape[:1] == (4,)]
    assert weights
    initial, _ = with_classes(base, load_model("default")[1], meta.classes)
    for key in weights:
        assert torch.equal(initial.state_dict()[key], base.state_dict()[key][:3])

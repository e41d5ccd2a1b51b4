"""Plain labelled photos (PNG + mask PNG, no georeferencing) through train, evaluate and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from agriseg.classes import DEFAULT_CLASSES
from agriseg.learning.datasets import parse_label_colors
from agriseg.learning.labels import Grid, Labels
from agriseg.learning.synthetic import draw_params, generate_survey

#: Colour coding of the generated masks (unlisted grey marks unlabelled pixels).
COLORS = {"soil": (0, 0, 0), "crop": (0, 255, 0), "weed": (255, 0, 0), "diseased": (255, 255, 0)}
SPEC = ",".join(f"{name}=#{r:02x}{g:02x}{b:02x}" for name, (r, g, b) in COLORS.items())
GREY = (128, 128, 128)
TINY = ("--epochs", "1", "--steps", "2", "--chip-size", "32", "--chips-per-step", "2")
CPU = ("--device", "cpu", "--threads", "1", "--quiet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photo(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic survey as an ``(H, W, 3)`` photo and its ``(H, W)`` class ids."""
    survey = generate_survey(draw_params(seed, size, size), seed)
    return survey.image.transpose(1, 2, 0).copy(), survey.labels.copy()


def colour_mask(labels: np.ndarray) -> np.ndarray:
    palette = np.array([*COLORS.values(), *[GREY] * 252], dtype="uint8")
    return palette[labels]


def write_pair(image_path: Path, mask_path: Path, seed: int, index: bool = False) -> np.ndarray:
    """Write photo ``seed`` and its mask (colour-coded, or class ids); returns the ids."""
    image, labels = photo(seed)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path)
    Image.fromarray(labels if index else colour_mask(labels)).save(mask_path)
    return labels


def test_png_folder_with_colour_masks_trains_and_evaluates(tmp_path: Path, run_cli) -> None:
    truth = {}
    for n in (1, 2):
        truth[n] = write_pair(
            tmp_path / "images" / f"00{n}_image.png",
            tmp_path / "annotations" / f"00{n}_annotation.png",
            seed=n,
        )
    model = tmp_path / "photos"
    code = run_cli(
        "train", tmp_path / "images", "--labels", tmp_path / "annotations",
        "--label-colors", SPEC, "--gsd", "0.01", "--out", model, *TINY, *CPU,
    )  # fmt: skip
    assert code == 0
    meta = json.loads((model / "model.json").read_text())
    assert [c["name"] for c in meta["classes"]] == list(COLORS)
    assert meta["gsd_m"] == 0.01 and meta["training"]["n_images"] == 2
    report = tmp_path / "scores.json"
    code = run_cli(
        "evaluate", tmp_path / "images" / "001_image.png",
        "--labels", tmp_path / "annotations" / "001_annotation.png", "--label-colors", SPEC,
        "--model", model, "--out", tmp_path / "run", "--json", report, *CPU,
    )  # fmt: skip
    assert code == 0
    found = json.loads(report.read_text())
    with rasterio.open(tmp_path / "run" / "001_image.classes.tif") as src:
        assert src.crs is None and src.transform == rasterio.Affine.identity()
        pred = src.read(1)
    labelled = truth[1] != 255
    assert found["labelled_pixels"] == int(labelled.sum())
    expected = np.bincount(truth[1][labelled] * 4 + pred[labelled], minlength=16).reshape(4, 4)
    assert found["confusion_matrix"]["counts"] == expected.tolist()
    assert found["confusion_matrix"]["classes"] == list(COLORS)


def test_index_masks_paired_by_glob_without_gsd(tmp_path: Path, run_cli) -> None:
    for n in (3, 4):
        write_pair(tmp_path / f"plot{n}.png", tmp_path / f"plot{n}_mask.png", seed=n, index=True)
    model = tmp_path / "m"
    code = run_cli(
        "train", str(tmp_path / "plot?.png"), "--labels", str(tmp_path / "*_mask.png"),
        "--out", model, *TINY, *CPU,
    )  # fmt: skip
    assert code == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["gsd_m"] is None  # plain images, no --gsd: unknown, never invented
    assert [c["name"] for c in meta["classes"]] == ["soil", "crop", "weed", "diseased"]
    assert meta["training"]["images"] == [str(tmp_path / "plot3.png"), str(tmp_path / "plot4.png")]


def shot(folder: Path) -> Path:
    """``folder/shot.png``: a plain photo, no georeferencing."""
    image, _ = photo(5)
    Image.fromarray(image).save(folder / "shot.png")
    return folder / "shot.png"


def test_run_on_a_plain_photo_writes_pixel_grid_outputs_without_polygons(
    tmp_path: Path, run_cli, capsys
) -> None:
    out = tmp_path / "out"
    code = run_cli("run", shot(tmp_path), "--out", out, "--device", "cpu")
    assert code == 0
    assert "not georeferenced" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "shot.classes.qml",
        "shot.classes.tif",
        "shot.classes.tif.aux.xml",
        "shot.confidence.tif",
        "shot.preview.png",  # a preview needs no CRS
        "shot.summary.json",
    ]
    with Image.open(out / "shot.preview.png") as preview:
        # the photo's 128 x 128 px, under the reliability verdict's banner
        assert preview.size[0] == 128 and preview.size[1] > 128
    summary = json.loads((out / "shot.summary.json").read_text())
    assert summary["outputs"]["preview"] == "shot.preview.png"
    assert summary["input"]["crs"] is None and "health" not in summary
    assert "field-health polygons" in summary["notes"][0]
    assert sum(c["pixels"] for c in summary["classes"]) == 128 * 128
    assert all(c["area_m2"] is None for c in summary["classes"])
    with rasterio.open(out / "shot.classes.tif") as src:
        assert src.crs is None and (src.height, src.width) == (128, 128)
    code = run_cli("run", tmp_path / "shot.png", "--out", tmp_path / "gsd", "--gsd", "0.02",
                   "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "gsd" / "shot.summary.json").read_text())
    for c in summary["classes"]:
        assert c["area_m2"] == pytest.approx(c["pixels"] * 0.02**2)


def test_plants_and_assume_crs_on_a_photo_say_to_georeference_it(
    tmp_path: Path, run_cli, capsys
) -> None:
    out = tmp_path / "out"
    assert run_cli("run", shot(tmp_path), "--out", out, *CPU) == 0
    assert run_cli("plants", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert "the run was on a plain image's pixel grid (no CRS)" in err
    assert "georeference the image first" in err and "--assume-crs" not in err
    assert run_cli("prescribe", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert "no map to spray by; georeference the image first" in err and "--assume" not in err
    assert not list(out.glob("*.plants.*")) and not list(out.glob("*.prescription.*"))
    # --assume-crs cannot place a photo: the message says so, and what to do
    assert run_cli("run", tmp_path / "shot.png", "--out", tmp_path / "o2", "--assume-crs",
                   "EPSG:32633", *CPU) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "which --assume-crs cannot place on the ground; drop --assume-crs" in err


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unpaired", "2 file(s) without a partner: "),
        ("colour_spec", "--label-colors 'crop=green': colour 'green' is not #rrggbb"),
        ("size", "mask is 64x64 px but its image is 128x128"),
        ("rgb_without_colors", "mask has 3 bands (colours?); give --label-colors"),
        ("no_listed_colour", "no pixel has a colour of --label-colors"),
    ],
)
def test_bad_photo_inputs_give_one_line(
    tmp_path: Path, run_cli, capsys, case: str, expected: str
) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images / "a.png", masks / "a_mask.png", seed=6)
    extra: tuple[str, ...] = ("--label-colors", SPEC)
    if case == "unpaired":
        write_pair(images / "b.png", masks / "c_mask.png", seed=7)
    elif case == "colour_spec":
        extra = ("--label-colors", "crop=green")
    elif case == "size":
        Image.fromarray(colour_mask(photo(6, 64)[1])).save(masks / "a_mask.png")
    elif case == "rgb_without_colors":
        extra = ()
    elif case == "no_listed_colour":
        extra = ("--label-colors", "crop=#123456")
    model = tmp_path / "m"
    code = run_cli("train", images, "--labels", masks, "--out", model, *extra, *TINY, *CPU)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not model.exists()


def test_evaluate_refuses_labels_the_model_cannot_score_before_segmenting(
    tmp_path: Path, run_cli, capsys
) -> None:
    write_pair(tmp_path / "a.png", tmp_path / "a_mask.png", seed=8)
    out = tmp_path / "run"
    code = run_cli(
        "evaluate", tmp_path / "a.png", "--labels", tmp_path / "a_mask.png",
        "--label-colors", "soil=#000000,thistle=#00ff00", "--out", out, *CPU,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "names class 'thistle', which is not one of soil, crop, weed, diseased" in err
    assert not out.exists()


def test_palette_masks_decode_by_their_colours(tmp_path: Path) -> None:
    _, labels = photo(9, 64)
    mask = Image.fromarray(labels, mode="P")
    mask.putpalette([v for colour in COLORS.values() for v in colour] + [128] * 3 * 252)
    mask.save(tmp_path / "m.png")
    grid = Grid(64, 64, rasterio.Affine.identity(), None)
    found = Labels(tmp_path / "m.png", grid, DEFAULT_CLASSES, colors=parse_label_colors(SPEC))
    np.testing.assert_array_equal(found.read(rasterio.windows.Window(0, 0, 64, 64)), labels)

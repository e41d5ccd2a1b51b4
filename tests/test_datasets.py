"""Pairing images with masks, label-colour tables, decoding colour-coded masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agriseg.classes import DEFAULT_CLASSES, ClassList
from agriseg.errors import InputError
from agriseg.learning.datasets import (
    color_ids,
    decode_colors,
    pair_files,
    pair_key,
    parse_label_colors,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("001_image.png", "001"),
        ("001_annotation.png", "001"),
        ("IMG_0042.JPG", "img_0042"),
        ("IMG_0042_mask.png", "img_0042"),
        ("plot-7_rgb.tif", "plot-7"),
        ("plot-7_labels.tif", "plot-7"),
        ("x_gt.png", "x"),
        ("field.labels.tif", "field"),
        ("mask.png", "mask"),  # nothing left to pair by: kept whole
    ],
)
def test_pair_key_strips_common_suffixes(name: str, key: str) -> None:
    assert pair_key(Path(name)) == key


def test_folders_pair_by_name_like_cwfid(tmp_path: Path) -> None:
    for n in ("003", "001", "002"):
        touch(tmp_path / "images" / f"{n}_image.png")
        touch(tmp_path / "annotations" / f"{n}_annotation.png")
    touch(tmp_path / "images" / "notes.txt")  # not an image: ignored
    pairs = pair_files([tmp_path / "images"], [tmp_path / "annotations"])
    assert [(i.name, m.name) for i, m in pairs] == [
        ("001_image.png", "001_annotation.png"),
        ("002_image.png", "002_annotation.png"),
        ("003_image.png", "003_annotation.png"),
    ]


def test_glob_patterns_pair_masks_beside_their_images(tmp_path: Path) -> None:
    for n in ("b", "a"):
        touch(tmp_path / f"{n}.png")
        touch(tmp_path / f"{n}_mask.png")
    pairs = pair_files([str(tmp_path / "?.png")], [str(tmp_path / "*_mask.png")])
    assert [(i.name, m.name) for i, m in pairs] == [
        ("a.png", "a_mask.png"),
        ("b.png", "b_mask.png"),
    ]


def test_explicit_files_pair_in_order(tmp_path: Path) -> None:
    images = [touch(tmp_path / "north.tif"), touch(tmp_path / "south.tif")]
    labels = [touch(tmp_path / "n.gpkg"), touch(tmp_path / "s.gpkg")]
    assert pair_files(images, labels) == list(zip(images, labels, strict=True))
    with pytest.raises(InputError, match=r"--labels gives 1 file\(s\) for 2 image\(s\)"):
        pair_files(images, labels[:1])


def test_unpaired_files_are_listed(tmp_path: Path) -> None:
    touch(tmp_path / "images" / "001_image.png")
    touch(tmp_path / "images" / "002_image.png")
    touch(tmp_path / "masks" / "001_mask.png")
    touch(tmp_path / "masks" / "009_mask.png")
    with pytest.raises(InputError) as info:
        pair_files([tmp_path / "images"], [tmp_path / "masks"])
    listed = str(info.value).split(";")[0]
    assert listed.startswith("2 file(s) without a partner: ")
    assert "002_image.png" in listed and "009_mask.png" in listed
    assert "001_image.png" not in listed and "001_mask.png" not in listed


def test_empty_folder_and_pattern_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image"):
        pair_files([tmp_path / "empty"], [tmp_path / "empty"])
    with pytest.raises(InputError, match=r"\*\.jpg: pattern given as images matches no file"):
        pair_files([str(tmp_path / "*.jpg")], [tmp_path])


def test_label_colors_parse_and_reject_bad_specs() -> None:
    colors = parse_label_colors("crop=#00ff00, weed=#FF0000,soil=0;0;0")
    assert colors == {"crop": (0, 255, 0), "weed": (255, 0, 0), "soil": (0, 0, 0)}
    with pytest.raises(InputError, match=r"--label-colors 'crop': expected name=#rrggbb"):
        parse_label_colors("crop")
    with pytest.raises(InputError, match=r"colour 'green' is not #rrggbb"):
        parse_label_colors("crop=green")
    with pytest.raises(InputError, match="crop and weed have the same colour"):
        parse_label_colors("crop=#00ff00,weed=#00ff00")


def test_decode_colors_maps_listed_colours_and_leaves_others_unlabelled() -> None:
    rgb = np.zeros((3, 2, 3), dtype="uint8")
    rgb[1, 0, 0] = 255  # green: crop
    rgb[0, 0, 1] = 255  # red: weed
    rgb[:, 1, 2] = 77  # grey: not listed
    colors = parse_label_colors("crop=#00ff00,weed=#ff0000,soil=#000000")
    found = decode_colors(rgb, color_ids(colors, DEFAULT_CLASSES), Path("m.png"))
    assert found.tolist() == [[1, 2, 0], [0, 0, 255]]
    custom = ClassList.parse("soil,maize,thistle")
    with pytest.raises(InputError, match="names class 'crop', which is not one of soil, maize"):
        color_ids(colors, custom)
    with pytest.raises(InputError, match=r"m.png: no pixel has a colour of --label-colors"):
        decode_colors(rgb, color_ids({"crop": (1, 2, 3)}, DEFAULT_CLASSES), Path("m.png"))

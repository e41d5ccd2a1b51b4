"""Bands belong to the model: files' bands are named and mapped to the model's by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from agriseg_cli.main import main
from conftest import write_raster
from rasterio.enums import ColorInterp

from agriseg.errors import InputError
from agriseg.io.raster import open_raster
from agriseg.io.spectral import band_names, canonical_band, find_bands, new_model_bands
from agriseg.learning.synthetic import BAND_NAMES, draw_params, generate_survey, write_survey
from agriseg.learning.training import TrainConfig, load_scene
from agriseg.models.registry import load_model

TRAIN = ("--epochs", "1", "--steps", "2", "--chip-size", "64", "--batch-size", "2")
TRAIN += ("--device", "cpu", "--quiet")
RUN = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")
RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
UNDEF = ColorInterp.undefined
#: Band order of the reordered copy, as indexes into the generator's order.
REORDER = [2, 1, 0, 3, 4]  # blue, green, red, red_edge, nir


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_named(
    path: Path,
    data: np.ndarray,
    descriptions: tuple[str, ...] = (),
    colorinterp: tuple[ColorInterp, ...] | None = None,
) -> Path:
    write_raster(path, data, colorinterp=colorinterp)
    with rasterio.open(path, "r+") as dst:
        for i, text in enumerate(descriptions, start=1):
            dst.set_band_description(i, text)
    return path


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A 5-band uint16 multispectral survey, a copy in another band order, and a model."""
    root = tmp_path_factory.mktemp("ms")
    paths = write_survey(
        generate_survey(draw_params(3, 160, 160, multispectral=True), 3), root, "ms"
    )
    with rasterio.open(paths.image) as src:
        image = src.read()
    reordered = write_named(
        root / "reordered.tif",
        image[REORDER],
        tuple(BAND_NAMES[i] for i in REORDER),
        (ColorInterp.blue, ColorInterp.green, ColorInterp.red, UNDEF, UNDEF),
    )
    model = root / "model" / "ms"
    assert (
        main(
            ["train", str(paths.image), "--labels", str(paths.labels), "--out", str(model), *TRAIN]
        )
        == 0
    )
    return paths, reordered, model


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("NIR", "nir"),
        ("Near-Infrared", "nir"),
        ("near infrared", "nir"),
        ("nir1", "nir"),
        ("Red Edge", "red_edge"),
        ("red-edge", "red_edge"),
        ("RE", "red_edge"),
        ("R", "red"),
        ("Blue", "blue"),
        ("SWIR 2", "swir2"),
        ("Panchromatic", "pan"),
        ("Thermal IR", "thermal_ir"),
    ],
)
def test_aliases_resolve_to_canonical_names(text, name):
    assert canonical_band(text) == name


def test_file_bands_are_named_by_description_then_colour_interpretation(tmp_path):
    path = write_named(
        tmp_path / "named.tif",
        np.zeros((5, 32, 32), "uint16"),
        ("Blue", "", "Near Infrared", "Thermal IR", ""),
        (ColorInterp.red, ColorInterp.green, UNDEF, UNDEF, ColorInterp.gray),
    )
    assert band_names(path) == ("blue", "green", "nir", "thermal_ir", "band5")
    # The description "Blue" wins over band 1's colour interpretation (red).
    assert find_bands(path, ["NIR", "red", "blue", "green"]) == {"NIR": 3, "blue": 1, "green": 2}


@pytest.mark.parametrize(
    ("descriptions", "colorinterp", "wanted", "expected"),
    [
        # By description, in any order.
        (("blue", "green", "red", "RedEdge", "NIR"), None, BAND_NAMES, (3, 2, 1, 4, 5)),
        # Colour interpretation names red, green, blue; the unnamed rest follow in order.
        ((), (*RGB, UNDEF, UNDEF), BAND_NAMES, (1, 2, 3, 4, 5)),
        # No names at all: the first bands in order, as before.
        ((), (ColorInterp.gray, UNDEF, UNDEF, UNDEF, UNDEF), BAND_NAMES, (1, 2, 3, 4, 5)),
        # An RGB model takes its three bands out of a multispectral file.
        (("nir", "red_edge", "blue", "green", "red"), None, ("red", "green", "blue"), (5, 4, 3)),
    ],
)
def test_bands_are_mapped_by_name(tmp_path, descriptions, colorinterp, wanted, expected):
    path = write_named(
        tmp_path / "f.tif", np.zeros((5, 32, 32), "uint16"), descriptions, colorinterp
    )
    assert open_raster(path, wanted).bands == expected


def test_a_band_named_elsewhere_is_not_replaced_by_position(tmp_path):
    path = write_named(
        tmp_path / "late.tif",
        np.zeros((4, 32, 32), "uint16"),
        colorinterp=(ColorInterp.gray, UNDEF, UNDEF, ColorInterp.red),
    )
    with pytest.raises(InputError, match=r"has band1, band2, band3, red \(no green, blue\)"):
        open_raster(path, ("red", "green", "blue"))


def test_a_named_band_never_feeds_another_name(tmp_path):
    # Blue first, and nothing names red edge or NIR: the old positional fallback
    # would feed blue to the model's red.
    path = write_named(
        tmp_path / "bgr.tif",
        np.zeros((5, 32, 32), "uint16"),
        colorinterp=(ColorInterp.blue, ColorInterp.green, ColorInterp.red, UNDEF, UNDEF),
    )
    with pytest.raises(InputError) as exc:
        open_raster(path, BAND_NAMES)
    message = str(exc.value)
    assert "\n" not in message and "bgr.tif" in message
    assert "needs bands red, green, blue, red_edge, nir" in message
    assert "has blue, green, red, band4, band5 (no red_edge, nir)" in message
    assert "--bands" in message


def test_multispectral_survey_trains_and_runs_in_any_band_order(tmp_path, survey):
    paths, reordered, model_path = survey
    model, meta = load_model(str(model_path))
    assert meta.bands == BAND_NAMES
    first_conv = next(p for p in model.parameters() if p.dim() == 4)
    assert first_conv.shape[1] == 5
    # Reflectance x 10000 in uint16 sits in ~0-0.1 after scaling by 65535; the fitted
    # statistics bring every band to unit spread.
    with rasterio.open(paths.image) as src:
        scaled = src.read().astype("float64") / 65535
    mean, std = np.array(meta.normalization.mean), np.array(meta.normalization.std)
    spread = ((scaled - mean[:, None, None]) / std[:, None, None]).std(axis=(1, 2))
    assert np.all((spread > 0.7) & (spread < 1.4)), spread

    runs = {}
    for path in (paths.image, reordered):
        out = tmp_path / path.stem
        assert main(["run", str(path), "--model", str(model_path), "--out", str(out), *RUN]) == 0
        summary = json.loads((out / f"{path.stem}.summary.json").read_text())
        with rasterio.open(out / f"{path.stem}.classes.tif") as src:
            runs[path.stem] = summary["input"], src.read(1)
        # NDVI and NDRE from the bands found by name, whatever their order.
        indices = summary["health"]["vegetation_indices"]
        assert list(indices) == ["ndvi", "ndre"] and 0 < indices["ndvi"] < 1
        runs[path.stem + "_indices"] = indices
    original, moved = runs["ms"], runs["reordered"]
    assert original[0]["bands"] == [1, 2, 3, 4, 5]
    assert moved[0]["bands"] == [3, 2, 1, 4, 5]
    assert original[0]["band_names"] == moved[0]["band_names"] == list(BAND_NAMES)
    assert np.array_equal(original[1], moved[1])
    assert runs["ms_indices"] == runs["reordered_indices"]


def test_training_files_are_mapped_to_the_first_files_names(survey):
    paths, reordered, _ = survey
    config = TrainConfig()
    first = load_scene(paths.image, paths.labels, BAND_NAMES, config)
    other = load_scene(reordered, paths.labels, BAND_NAMES, config)
    assert np.array_equal(first.image, other.image, equal_nan=True)


def test_missing_band_is_a_one_line_error(tmp_path, capsys, survey):
    _, _, model_path = survey
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 64, 64), "uint16"), colorinterp=RGB)
    out = tmp_path / "out"
    assert main(["run", str(rgb), "--model", str(model_path), "--out", str(out), *RUN]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("agriseg run: error: ") and "rgb.tif" in lines[0]
    assert (
        "needs bands red, green, blue, red_edge, nir but the file has red, green, blue" in lines[0]
    )
    assert "--bands" in lines[0]
    # --bands still overrides the names.
    five = write_raster(
        tmp_path / "five.tif", np.zeros((5, 64, 64), "uint16"), colorinterp=(*RGB, UNDEF, UNDEF)
    )
    assert (
        main(
            [
                "run",
                str(five),
                "--model",
                str(model_path),
                "--out",
                str(out),
                *RUN,
                "--bands",
                "1,2,3,4,5",
            ]
        )
        == 0
    )


def test_band_names_option_names_unnamed_training_bands(tmp_path, survey):
    paths, _, _ = survey
    with rasterio.open(paths.image) as src:
        image = src.read()
    bare = write_raster(
        tmp_path / "bare.tif", image, colorinterp=(ColorInterp.gray,) + (UNDEF,) * 4
    )
    assert band_names(bare) == ("band1", "band2", "band3", "band4", "band5")
    out = tmp_path / "named"
    names = "R,G,B,Red Edge,near-infrared"
    args = ["train", str(bare), "--labels", str(paths.labels), "--out", str(out), *TRAIN]
    assert main([*args, "--band-names", names]) == 0
    _, meta = load_model(str(out))
    assert meta.bands == BAND_NAMES


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ("--band-names", "red,green"),
            "--band-names gives 2 name(s) (red, green) but the file has 5 band(s)",
        ),
        (("--bands", "1,2,3", "--band-names", "red,nir"), "but --bands selects 3 band(s)"),
        (("--band-names", "red,green,blue,red,nir"), "names must be distinct"),
    ],
)
def test_band_names_option_errors(tmp_path, capsys, survey, extra, expected):
    paths, _, _ = survey
    args = ["train", str(paths.image), "--labels", str(paths.labels), "--out", str(tmp_path / "m")]
    assert main([*args, *TRAIN, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_new_model_bands_come_from_the_file(survey):
    paths, reordered, _ = survey
    assert new_model_bands(paths.image, None, None) == BAND_NAMES
    assert new_model_bands(reordered, (3, 2, 1), None) == ("red", "green", "blue")


def test_rgb_model_on_a_multispectral_survey_warns_but_not_on_16_bit_rgb(tmp_path, survey):
    paths, _, model_path = survey
    assert load_model(str(model_path))[1].pixel_kinds == ("uint16",)
    out = tmp_path / "ms"
    assert main(["run", str(paths.image), "--out", str(out), *RUN]) == 0
    warnings = json.loads((out / f"{paths.image.stem}.summary.json").read_text())["warnings"]
    assert any("multispectral uint16 survey (it also has red_edge, nir)" in w for w in warnings)
    # A 16-bit RGB export is scaled right for the shipped 8-bit model: no warning.
    rgb = write_raster(
        tmp_path / "rgb16.tif",
        (np.arange(3 * 64 * 64).reshape(3, 64, 64) % 60000).astype("uint16"),
        colorinterp=RGB,
    )
    assert main(["run", str(rgb), "--out", str(tmp_path / "rgb"), *RUN]) == 0
    summary = json.loads((tmp_path / "rgb" / "rgb16.summary.json").read_text())
    assert not any("multispectral" in w for w in summary["warnings"])

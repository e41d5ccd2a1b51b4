"""Tests of the synthetic survey generator."""

from __future__ import annotations

import geopandas
import numpy as np
import pytest
import rasterio
from rasterio import features
from rasterio.enums import ColorInterp

from agriseg.classes import DEFAULT_CLASSES, NODATA
from agriseg.errors import InputError
from agriseg.learning.synthetic import (
    BAND_NAMES,
    Survey,
    SurveyParams,
    draw_params,
    generate_survey,
    label_polygons,
    write_survey,
)

CROP, WEED, DISEASED = 1, 2, 3


def _fractions(survey: Survey) -> np.ndarray:
    return np.bincount(survey.labels.ravel(), minlength=4) / survey.labels.size


def test_same_seed_same_survey_other_seed_other_survey() -> None:
    params = SurveyParams(height=128, width=160, blur_px=0.8)
    a, b = generate_survey(params, 3), generate_survey(params, 3)
    c = generate_survey(params, 4)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_survey_has_every_class_in_proportion(seed: int) -> None:
    survey = generate_survey(SurveyParams(), seed)
    assert survey.image.shape == (3, 512, 512)
    assert survey.image.dtype == np.uint8
    assert survey.labels.shape == (512, 512)
    soil, crop, weed, diseased = _fractions(survey)
    assert 0.25 <= crop <= 0.40
    assert 0.03 <= weed <= 0.08
    assert 0.03 <= diseased <= 0.08
    assert soil == pytest.approx(1 - crop - weed - diseased)


def test_classes_differ_in_colour() -> None:
    survey = generate_survey(SurveyParams(noise=0.0), 5)
    mean = {c: survey.image[:, survey.labels == c].mean(axis=1) for c in range(4)}
    assert mean[CROP][1] > mean[CROP][0]  # crop is green
    assert mean[DISEASED][0] > mean[CROP][0] + 30  # disease turns it yellow-brown
    assert np.abs(mean[WEED] - mean[CROP]).max() > 10  # weeds are another green


def test_geotiffs_and_polygons_round_trip(tmp_path) -> None:
    params = SurveyParams(height=200, width=300, gsd_m=0.03, row_angle_deg=35)
    survey = generate_survey(params, 11)
    paths = write_survey(survey, tmp_path / "out", "field")
    assert paths.image.name == "field.tif"
    with rasterio.open(paths.image) as src:
        assert (src.count, src.height, src.width) == (3, 200, 300)
        assert src.crs == survey.crs == rasterio.crs.CRS.from_epsg(32633)
        assert src.transform == survey.transform
        assert src.transform.a == pytest.approx(0.03)
        assert (src.transform.c, src.transform.f) == params.origin
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.profile["compress"] == "deflate"
        assert src.block_shapes[0] == (256, 256)
        assert np.array_equal(src.read(), survey.image)
    with rasterio.open(paths.labels) as src:
        assert src.dtypes[0] == "uint8"
        assert src.nodata == NODATA
        assert src.transform == survey.transform
        for key, value in DEFAULT_CLASSES.tags().items():
            assert src.tags()[key] == value
        assert src.colormap(1)[CROP] == DEFAULT_CLASSES.colormap()[CROP]
        assert np.array_equal(src.read(1), survey.labels)
    polygons = geopandas.read_file(paths.polygons, layer="labels")
    assert set(polygons["class"]) == {"soil", "crop", "weed", "diseased"}
    assert polygons.crs == survey.crs
    burnt = features.rasterize(
        zip(polygons.geometry, polygons["class_id"], strict=True),
        out_shape=survey.labels.shape,
        transform=survey.transform,
        fill=NODATA,
        dtype="uint8",
    )
    assert (burnt == survey.labels).mean() >= 0.99
    assert not any(p.name.startswith(".") for p in paths.image.parent.iterdir())


def test_label_polygons_columns() -> None:
    survey = generate_survey(SurveyParams(height=64, width=64), 0)
    frame = label_polygons(survey)
    assert list(frame.columns) == ["class", "class_id", "geometry"]
    assert frame.crs == survey.crs
    area = frame.geometry.area.groupby(frame["class_id"]).sum()
    counts = np.bincount(survey.labels.ravel(), minlength=4)
    for class_id, a in area.items():
        assert a == pytest.approx(counts[class_id] * 0.02**2)


def test_draw_params_is_plausible_and_seeded() -> None:
    drawn = [draw_params(seed) for seed in range(50)]
    assert all(0.01 <= p.gsd_m <= 0.04 for p in drawn)
    assert all(p.plant_radius_m < p.row_spacing_m / 2 for p in drawn)
    assert len({p.row_angle_deg for p in drawn}) == 50
    assert draw_params(9) == draw_params(9)
    assert draw_params(9, height=64, gsd_m=0.02).gsd_m == 0.02
    with pytest.raises(InputError, match="gsd"):
        draw_params(9, gsd=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_drawn_surveys_show_every_class(seed: int) -> None:
    survey = generate_survey(draw_params(seed, disease_foci=2), seed)
    assert (_fractions(survey) > 0.005).all()


def test_bad_parameters_are_named() -> None:
    with pytest.raises(InputError, match="gsd_m"):
        generate_survey(SurveyParams(gsd_m=0.0), 0)
    with pytest.raises(InputError, match="EPSG:nope"):
        generate_survey(SurveyParams(crs="EPSG:nope"), 0)


def test_multispectral_bands(tmp_path) -> None:
    survey = generate_survey(SurveyParams(height=128, width=128, multispectral=True), 2)
    assert survey.image.shape == (5, 128, 128)
    assert survey.image.dtype == np.uint16
    nir, red = survey.image[4].astype(float), survey.image[0].astype(float)
    plants = np.isin(survey.labels, (CROP, WEED))
    assert nir[plants].mean() > 1.3 * nir[survey.labels == 0].mean()
    ndvi = (nir - red) / (nir + red)
    assert ndvi[survey.labels == CROP].mean() > 0.6 > ndvi[survey.labels == 0].mean()
    paths = write_survey(survey, tmp_path, "ms")
    with rasterio.open(paths.image) as src:
        assert src.count == 5 and src.dtypes[0] == "uint16"
        assert src.descriptions == BAND_NAMES
        assert src.colorinterp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


def test_plants_scale_with_ground_sampling_distance() -> None:
    fine = generate_survey(SurveyParams(gsd_m=0.01), 0)
    coarse = generate_survey(SurveyParams(gsd_m=0.04), 0)
    # The same field drawn at other resolutions keeps its plant cover.
    assert _fractions(fine)[1:].sum() == pytest.approx(_fractions(coarse)[1:].sum(), abs=0.08)

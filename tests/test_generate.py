import geopandas as gpd
import numpy as np
import rasterio
from conftest import GEOPACKAGE_1_2, geopackage_version


def test_generate_writes_a_reproducible_labelled_survey(tmp_path, run_cli):
    for name in ("a", "b"):
        args = ("generate", tmp_path / name, "--size", "96", "--seed", "3", "--gsd", "0.03")
        assert run_cli(*args, "--quiet") == 0
    with (
        rasterio.open(tmp_path / "a" / "survey.tif") as a,
        rasterio.open(tmp_path / "b" / "survey.tif") as b,
    ):
        assert a.crs is not None and a.res == (0.03, 0.03)
        assert np.array_equal(a.read(), b.read())
    with rasterio.open(tmp_path / "a" / "survey.labels.tif") as labels:
        assert labels.shape == (96, 96)
    polygons = gpd.read_file(tmp_path / "a" / "survey.labels.gpkg")
    assert set(polygons["class"]) <= {"soil", "crop", "weed", "diseased"}
    for product in ("labels", "plants"):
        assert geopackage_version(tmp_path / "a" / f"survey.{product}.gpkg") == GEOPACKAGE_1_2

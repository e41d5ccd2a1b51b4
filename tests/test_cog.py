"""The class and confidence rasters are cloud-optimised GeoTIFFs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.errors
from agriseg_cli.main import main
from conftest import UTM, UTM_TRANSFORM, field_image, write_raster
from rasterio.crs import CRS
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from agriseg.classes import NODATA, ClassList
from agriseg.io.atomic import output_transaction
from agriseg.io.grid import Grid
from agriseg.io.ownership import output_paths
from agriseg.io.raster import RasterInfo
from agriseg.segmentation import overviews, raster_outputs
from agriseg.segmentation.raster_outputs import ClassRasterWriter

CLASSES = ClassList.build(["soil", "crop", "weed"])
SIZE = 1300  # overviews at 2 (650) and 4 (325): down to one 512-px block


def assert_cog(path: Path, overviews: list[int]) -> None:
    """rio-cogeo's validator (GDAL's COG rules: IFDs before the data, smaller overviews'
    data first...) without warnings, GDAL's own LAYOUT=COG, 512-px blocks, overviews."""
    assert cog_validate(path) == (True, [], [])
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.block_shapes[0] == (512, 512)
        assert src.overviews(1) == overviews


def write_outputs(
    tmp_path: Path,
    classes: np.ndarray,
    confidence: np.ndarray,
    before_cogs: Callable[[ClassRasterWriter], None] | None = None,
) -> dict:
    """Write the rasters block by block as a run does; ``before_cogs`` sees the closed
    writer before its rasters become COGs."""
    grid = Grid(SIZE, SIZE, UTM_TRANSFORM, CRS.from_string(UTM))
    info = RasterInfo(tmp_path / "in.tif", grid, 3, "uint8", (256, 256), (1, 2, 3))
    paths = output_paths(tmp_path, "in")
    with output_transaction() as transaction:
        with ClassRasterWriter(info, paths, 256, "test", transaction, CLASSES) as writer:
            for row in range(0, SIZE, 256):
                for col in range(0, SIZE, 256):
                    window = Window(col, row, min(256, SIZE - col), min(256, SIZE - row))
                    rows, cols = window.toslices()
                    writer.write(window, classes[rows, cols], confidence[rows, cols])
        if before_cogs is not None:
            before_cogs(writer)
        writer.to_cogs()
    return paths


def test_class_and_confidence_rasters_are_cogs_with_colours_and_tags(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = np.repeat(np.repeat(rng.integers(0, 3, (13, 13), dtype="uint8"), 100, 0), 100, 1)
    classes[:40] = NODATA
    confidence = rng.integers(30, 101, (SIZE, SIZE), dtype="uint8")
    paths = write_outputs(tmp_path, classes, confidence)
    for kind in ("classes", "confidence"):
        assert_cog(paths[kind], [2, 4])
    with rasterio.open(paths["classes"]) as src:
        assert np.array_equal(src.read(1), classes)
        assert src.colormap(1)[2] == (*CLASSES[2].colour, 255)
        assert src.tags()["class_2"] == "weed" and src.tags()["class_2_role"] == "weed"
        assert src.descriptions == ("class",) and src.nodata == NODATA
        overview = src.read(1, out_shape=(SIZE // 4, SIZE // 4))
        # classes are never blended (average would invent ids between the patches')
        assert np.array_equal(overview, classes[::4, ::4])
    with rasterio.open(paths["confidence"]) as src:
        assert np.array_equal(src.read(1), confidence)
        assert src.tags()["units"] == "percent"
        mean = float(src.read(1, out_shape=(SIZE // 4, SIZE // 4)).mean())
        assert mean == pytest.approx(float(confidence.mean()), abs=1.0)  # averaged


def test_a_run_writes_cogs_that_the_health_pass_reads(tmp_path: Path, run_cli) -> None:
    image = write_raster(tmp_path / "survey.tif", field_image(96, 96))
    out = tmp_path / "out"
    assert run_cli("run", image, "--out", out, "--quiet", "--device", "cpu") == 0
    for kind in ("classes", "confidence"):
        assert_cog(out / f"survey.{kind}.tif", [])  # one block: no overviews needed
    assert (out / "survey.health.gpkg").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_working_rasters_compress_fast(tmp_path):
    from agriseg.io.working_copies import working_compression

    options = working_compression()
    assert options in ({"compress": "zstd", "zstd_level": 1}, {"compress": "deflate", "zlevel": 1})
    path = tmp_path / "working.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, **options, crs=UTM, transform=UTM_TRANSFORM) as dst:
        dst.write(np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64).astype(np.uint8))
    with rasterio.open(path) as src:
        assert src.compression.name.lower() == options["compress"]


def test_nodata_blocks_are_neither_written_nor_resampled(tmp_path: Path, monkeypatch) -> None:
    # An irregular flight area on a large rectangle: one 300-px patch of data.
    classes = np.full((SIZE, SIZE), NODATA, dtype="uint8")
    classes[700:1000, 300:600] = np.random.default_rng(3).integers(0, 3, (300, 300))
    confidence = np.where(classes == NODATA, NODATA, 90).astype("uint8")
    asked = []
    original = overviews.build_overviews

    def counting(path, reduce, factors, has_data):
        def noted(window):
            asked.append(has_data(window))
            return asked[-1]

        return original(path, reduce, factors, noted)

    monkeypatch.setattr(raster_outputs, "build_overviews", counting)
    present = []

    def blocks_written(writer: ClassRasterWriter) -> None:
        with rasterio.open(writer.staged["classes"]) as src:
            present.extend(
                (r, c)
                for r in range(6)
                for c in range(6)
                if int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", 1) or 0)
            )

    paths = write_outputs(tmp_path, classes, confidence, blocks_written)
    # Only the 256-px blocks the patch touches reach the working raster.
    assert present == [(r, c) for r in (2, 3) for c in (1, 2)]
    assert asked == [True, True]  # one 2048-px window, once per raster, with data
    for kind in ("classes", "confidence"):
        assert_cog(paths[kind], [2, 4])
    with rasterio.open(paths["classes"]) as src:
        assert np.array_equal(src.read(1), classes)
        overview = src.read(1, out_shape=(SIZE // 4, SIZE // 4))
        assert (overview[:175] == NODATA).all() and (overview[250:] == NODATA).all()
        assert set(np.unique(overview[175:250, 75:150])) <= {0, 1, 2}


@pytest.mark.parametrize("stream", ["--stream-health", "--no-stream-health"])
def test_a_cog_that_cannot_be_written_fails_the_run_in_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch, capsys, stream: str
) -> None:
    # The COGs are written while a streamed health pass finishes, or after the pass:
    # either way a GDAL failure is one line naming the file, and nothing is left.
    def disk_full(path: Path, *args: object) -> None:
        raise rasterio.errors.RasterioError(f"{path}: No space left on device")

    monkeypatch.setattr(raster_outputs, "write_cog", disk_full)
    image = write_raster(tmp_path / "field.tif", field_image(160, 160))
    out = tmp_path / "out"
    options = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")
    assert main(["run", str(image), "--out", str(out), *options, stream]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    # Streamed, the two COGs may be written on two threads: either may fail first.
    named = "field.classes.tif" in err[0] or "field.confidence.tif" in err[0]
    assert len(err) == 1 and named and "No space left" in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists()

"""The quick-look PNG: size, blending, legend, decimated reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from agriseg.classes import CLASSES, NODATA
from agriseg.health.pane_polygons import picked_pixels
from agriseg.health.preview import (
    ALPHA,
    PngWriter,
    PreviewCanvas,
    StreamedPreview,
    blend_preview,
    legend_rows,
    preview_shape,
    read_preview_image,
    render_preview,
    write_preview,
)


def test_preview_shape_fits_and_never_upscales() -> None:
    assert preview_shape(50_000, 40_000) == (2048, 1638)
    assert preview_shape(100, 60) == (100, 60)


def test_classes_are_blended_over_the_image(tmp_path: Path) -> None:
    classes = np.full((256, 256), NODATA, dtype="uint8")
    classes[128:, 128:] = 1
    image = np.full((3, 256, 256), 100, dtype="uint8")
    write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    write_raster(tmp_path / "i.tif", image, block=16)
    out = np.asarray(render_preview(tmp_path / "c.tif", tmp_path / "i.tif"))
    assert out.shape == (256, 256, 3)
    crop = np.array(CLASSES[1].colour)
    assert np.allclose(out[200, 200], 100 * (1 - ALPHA) + crop * ALPHA, atol=1)
    assert (out[200, 20] == 100).all()  # nodata: the image shows through
    assert (out[1, 1] == 255).all()  # legend box in the corner


def test_large_raster_is_decimated_to_the_maximum(tmp_path: Path) -> None:
    classes = np.random.default_rng(0).integers(0, 4, (64, 4096), dtype="uint8")
    write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    path = write_preview(tmp_path / "c.tif", None, tmp_path / "p.png")
    with Image.open(path) as png:
        assert png.size == (2048, 32) and png.format == "PNG"


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_non_byte_images_are_stretched(tmp_path: Path, dtype: str) -> None:
    classes = np.full((32, 32), NODATA, dtype="uint8")
    image = np.linspace(0, 4000, 3 * 32 * 32).reshape(3, 32, 32).astype(dtype)
    write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    write_raster(tmp_path / "i.tif", image, block=16)
    out = np.asarray(render_preview(tmp_path / "c.tif", tmp_path / "i.tif", max_size=16))
    assert out.shape == (16, 16, 3)
    assert out[8:].max() == 255 and out[8:].min() < out[8:].max()


@pytest.mark.parametrize(("height", "width", "band"), [(64, 4096, 7), (3000, 2500, 512), (9, 9, 4)])
def test_canvas_fed_by_bands_matches_gdal_nearest_decimation(
    tmp_path: Path, height: int, width: int, band: int
) -> None:
    classes = np.random.default_rng(height).integers(0, 5, (height, width), dtype="uint8")
    path = write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    canvas = PreviewCanvas(height, width)
    for row in range(0, height, band):
        canvas.add(classes[row : row + band], row)
    with rasterio.open(path) as src:
        expected = src.read(1, out_shape=canvas.shape, resampling=Resampling.nearest)
    assert np.array_equal(canvas.classes, expected)


def test_a_png_written_strip_by_strip_holds_the_rows_given(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).integers(0, 256, (301, 257, 3), dtype="uint8")
    path = tmp_path / "p.png"
    with PngWriter(path, 301, 257) as png:
        for start in (0, 1, 100, 300):  # uneven strips, one of a single row
            png.write(rows[start : {0: 1, 1: 100, 100: 300, 300: 301}[start]])
    with Image.open(path) as back:
        assert back.format == "PNG" and back.mode == "RGB"
        assert np.array_equal(np.asarray(back), rows)


def test_a_png_refuses_rows_that_do_not_fit_and_an_unfinished_file(tmp_path: Path) -> None:
    png = PngWriter(tmp_path / "p.png", 4, 5)
    with pytest.raises(ValueError, match="do not fit"):
        png.write(np.zeros((2, 6, 3), "uint8"))
    png.write(np.zeros((3, 5, 3), "uint8"))
    with pytest.raises(ValueError, match="do not fit"):
        png.write(np.zeros((2, 5, 3), "uint8"))
    with pytest.raises(ValueError, match="3 of 4 PNG rows"):
        png.close()


@pytest.mark.parametrize(("height", "width", "strip"), [(3000, 2500, 64), (200, 120, 7)])
def test_a_preview_streamed_strip_by_strip_is_the_one_drawn_whole(
    tmp_path: Path, height: int, width: int, strip: int
) -> None:
    # Strips narrower than the legend (which waits for the rows under it), strips that
    # fall between preview rows (3000 -> 2048 rows), and the image under the classes.
    rng = np.random.default_rng(height)
    classes = rng.integers(0, 5, (height, width), dtype="uint8")
    classes[:, :9] = NODATA
    canvas = PreviewCanvas(height, width)
    image = rng.integers(0, 256, (*canvas.shape, 3), dtype="uint8")
    assert legend_rows(canvas.shape, CLASSES) > strip / height * canvas.shape[0]
    path = tmp_path / "p.png"
    with PngWriter(path, *canvas.shape) as png:
        stream = StreamedPreview(canvas.shape, CLASSES, image, png)
        for row in range(0, height, strip):
            picked = picked_pixels(classes[row : row + strip], row, 0, *canvas.picks)
            stream.add(canvas.first_row(row), picked)
            canvas.add(classes[row : row + strip], row)
    expected = np.asarray(blend_preview(canvas.classes, CLASSES, image))
    with Image.open(path) as back:
        assert np.array_equal(np.asarray(back), expected)


def test_rows_put_above_a_streamed_png_read_back_in_pillow_and_gdal(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (301, 97, 3), dtype=np.uint8)
    image[100:200] = 40  # runs the deflater matches back into
    top = rng.integers(0, 256, (23, 97, 3), dtype=np.uint8)
    path = tmp_path / "preview.png"
    with PngWriter(path, len(image), image.shape[1]) as png:
        png.write(image[:150])
        png.write(image[150:])
    PngWriter.rows_above(path, top)
    expected = np.concatenate([top, image])
    with Image.open(path) as opened:
        opened.load()  # checks the zlib checksum and every chunk's CRC
        assert np.array_equal(np.asarray(opened.convert("RGB")), expected)
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(path) as src:  # GDAL's PNG driver
        assert np.array_equal(src.read().transpose(1, 2, 0), expected)
    with pytest.raises(ValueError):
        PngWriter.rows_above(path, top[:, :50])


def test_a_sparse_image_is_read_for_the_preview_only_where_it_has_data(tmp_path, monkeypatch):
    from test_empty import write_patch_survey

    import agriseg.classes

    image = write_patch_survey(tmp_path / "survey.tif", 1100, 300, (530, 610))
    pieces = read_preview_image(image, (550, 550))  # scale 2: pieces average alike
    monkeypatch.setattr(agriseg.classes, "SKIP_EMPTY", False)
    whole = read_preview_image(image, (550, 550))
    assert np.array_equal(pieces, whole)
    assert (whole[:200] == 255).all() and (whole[265:300, 305:450] != 255).any()

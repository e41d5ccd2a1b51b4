"""Quick-look PNG: the input image with the classes blended over it and a legend.

Rasters are read decimated (``out_shape``, which uses overviews where the file
has them), never whole, so a preview of a 50k × 50k px orthomosaic costs a few MB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling

from agriseg.atomic import atomic_output
from agriseg.classes import NODATA, ClassList
from agriseg.raster import READ_ENV
from agriseg.spectral import find_bands

#: Longest side of the preview, in pixels.
#: Bands the preview shows, by name.
RGB = ("red", "green", "blue")

MAX_SIZE = 2048

#: zlib level of the preview PNG.
PNG_COMPRESS_LEVEL = 1

#: Opacity of the class colours over the image.
ALPHA = 0.45


def preview_shape(height: int, width: int, max_size: int = MAX_SIZE) -> tuple[int, int]:
    """``(height, width)`` of a preview no larger than ``max_size`` on its long side."""
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """2–98 % percentile stretch to uint8 (uint8 images are shown as they are)."""
    if band.dtype == np.uint8:
        return band
    values = band[valid]
    if not values.size:
        return np.zeros(band.shape, dtype="uint8")
    lo, hi = np.percentile(values, (2, 98))
    scaled = (band.astype("float64") - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype("uint8")


def read_preview_image(image_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """RGB uint8 of the image at ``shape``: its red, green and blue bands by name (so BGR
    and multispectral files show true colour), else the first three bands, or one as grey."""
    # The reader's bounded block cache: without overviews GDAL decodes every block, and
    # its default cache (5 % of RAM) kept them all (8192² RGB: +430 MB; capped: +110 MB).
    with rasterio.Env(**READ_ENV), rasterio.open(image_path) as src:
        found = find_bands(src, RGB)
        if len(found) == len(RGB):
            bands = [found[name] for name in RGB]
        else:
            bands = [1, 2, 3] if src.count >= 3 else [1]
        data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average)
        valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    rgb = np.stack([_stretch(b, valid) for b in data], axis=-1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    rgb[~valid] = 255
    return rgb


def _legend(image: Image.Image, classes: ClassList) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    size = max(10, min(image.size) // 40)
    pad = size // 2
    rows = [(c.name, c.colour) for c in classes]
    width = pad * 3 + size + max(int(draw.textlength(n, font=font)) for n, _ in rows)
    height = pad + len(rows) * (size + pad)
    draw.rectangle([0, 0, width, height], fill=(255, 255, 255))
    for k, (name, colour) in enumerate(rows):
        top = pad + k * (size + pad)
        draw.rectangle([pad, top, pad + size, top + size], fill=colour, outline=(0, 0, 0))
        draw.text((pad * 2 + size, top + size / 2), name, fill=(0, 0, 0), font=font, anchor="lm")


class PreviewCanvas:
    """The preview's classes, decimated (nearest) from a raster fed strip by strip.

    Args:
        height: Rows of the class raster.
        width: Columns of the class raster.
        max_size: Longest side of the preview in pixels.
    """

    def __init__(self, height: int, width: int, max_size: int = MAX_SIZE) -> None:
        self.shape = preview_shape(height, width, max_size)
        # The source pixel under each preview pixel's centre, as GDAL's nearest picks.
        self._rows = _centres(self.shape[0], height)
        self._cols = _centres(self.shape[1], width)
        self.classes = np.full(self.shape, NODATA, dtype="uint8")

    def add(self, rows: np.ndarray, row_off: int) -> None:
        """Take class rows ``[row_off, row_off + len(rows))`` of the raster."""
        pick = (self._rows >= row_off) & (self._rows < row_off + len(rows))
        self.classes[pick] = rows[np.ix_(self._rows[pick] - row_off, self._cols)]


def _centres(n: int, size: int) -> np.ndarray:
    return np.minimum(((np.arange(n) + 0.5) * size / n).astype("int64"), size - 1)


def blend_preview(
    classes: np.ndarray, class_list: ClassList, image: np.ndarray | None = None
) -> Image.Image:
    """The preview of preview-sized ``classes``: blended over ``image`` (RGB uint8 of the
    same size, see :func:`read_preview_image`; white if None), with a legend."""
    shape = classes.shape
    if image is None:
        image = np.full((*shape, 3), 255, "uint8")
    base = Image.fromarray(image, mode="RGB")
    palette = np.zeros((256, 3), dtype="uint8")
    for c in class_list:
        palette[c.id] = c.colour
    colours = Image.fromarray(palette[classes], mode="RGB")
    known = (classes != NODATA) & (classes < len(class_list))
    blended = Image.composite(
        Image.blend(base, colours, ALPHA), base, Image.fromarray(known.astype("uint8") * 255, "L")
    )
    _legend(blended, class_list)
    return blended


def render_preview(
    classes_path: Path, image_path: Path | None = None, max_size: int = MAX_SIZE
) -> Image.Image:
    """The preview image: classes blended over the image (white where there is none).

    Args:
        classes_path: Class raster (uint8, nodata 255).
        image_path: The segmented image on the same grid, or None for classes alone.
        max_size: Longest side of the preview in pixels.
    """
    with rasterio.open(classes_path) as src:
        shape = preview_shape(src.height, src.width, max_size)
        classes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        class_list = ClassList.of_class_raster(src)
    image = read_preview_image(image_path, shape) if image_path else None
    return blend_preview(classes, class_list, image)


def save_png(image: Image.Image, path: Path) -> None:
    """Save ``image`` as a PNG at ``path`` (at a fast zlib level: ~5x quicker than the
    default for a ~20 % larger file)."""
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_preview(
    classes_path: Path, image_path: Path | None, out_path: Path, max_size: int = MAX_SIZE
) -> Path:
    """Render the preview (see :func:`render_preview`) and save it as a PNG, atomically."""
    image = render_preview(classes_path, image_path, max_size)
    with atomic_output(out_path) as tmp:
        save_png(image, tmp)
    return out_path

"""Models without a network: class probabilities computed from each tile's own pixels.

Two shipped models (``agriseg/weights/NAME.json``, architecture in
:data:`~agriseg.models.meta.INDEX_ARCHITECTURES`) run through the same tiling, blending
and products as the networks, with no label ever seen:

* ``vegetation`` (soil / vegetation): a spectral index with the tile's own threshold
  (:mod:`agriseg.models.vegetation`): NDVI where the input has near-infrared, else a green
  contrast of the RGB bands;
* ``rows`` (soil / crop / weed / plants off rows): that vegetation, split by the crop
  rows found in the tile (:mod:`agriseg.models.croprows`): crop on the rows, weed between
  them; where a tile has no rows its vegetation is ``plants_off_rows``, never weed.

The engine sees tiles normalised with mean 0 and std 1, i.e. pixel values over the
dtype's full scale; every index is a ratio or is divided by the tile's brightness, so
the scale does not matter. Which bands a tile holds is fixed by their number (see
:func:`input_bands`), so a worker needs nothing but the tiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window
from scipy import ndimage

from agriseg.classes import NODATA, ClassList
from agriseg.config import RefineChoice
from agriseg.errors import InputError
from agriseg.io.raster import RasterInfo, open_dataset, read_window
from agriseg.io.spectral import find_bands
from agriseg.models.croprows import MIN_COVER, find_rows, label_rows
from agriseg.models.meta import ModelMeta
from agriseg.models.vegetation import index_values, tile_vegetation

#: Bands an index model reads, by what the input offers; a tile's band count says
#: which of these it holds.
BAND_SETS: tuple[tuple[str, ...], ...] = (
    ("red", "green", "blue", "nir"),
    ("red", "green", "blue"),
    ("red", "nir"),
)


def input_bands(available: Sequence[str], model: str) -> tuple[str, ...]:
    """The bands an index model reads from an input with bands named ``available``."""
    names = set(available)
    for bands in BAND_SETS:
        if names >= set(bands):
            return bands
    raise InputError(
        f"model {model} needs red, green and blue bands, or red and near-infrared "
        f"(nir); the input has {', '.join(available) or 'no named bands'}: name its "
        "bands (see Band names in the docs) or pick them with --bands"
    )


def _bands_of(tile: np.ndarray) -> dict[str, np.ndarray]:
    for bands in BAND_SETS:
        if len(bands) == tile.shape[0]:
            return dict(zip(bands, tile, strict=True))
    raise InputError(f"an index model takes 2, 3 or 4 bands, not {tile.shape[0]}")


def colour_features(tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per pixel colour for telling crop from weed: the chromatic coordinates of every
    band but the last, and the log of the brightness over the tile's median."""
    total = tile.sum(axis=0)
    safe = np.maximum(total, np.float32(1e-6))
    median = max(float(np.median(total[valid])), 1e-6) if valid.any() else 1.0
    return np.concatenate([tile[:-1] / safe, np.log(safe / np.float32(median))[None]])


class IndexForward:
    """Class probabilities of an index model (see the module docstring), numpy only."""

    def __init__(self, meta: ModelMeta) -> None:
        self.meta = meta
        self.rows = meta.architecture == "crop-rows"

    def tile_probabilities(self, tile: np.ndarray) -> np.ndarray:
        """``(classes, H, W)`` probabilities of one ``(bands, H, W)`` tile."""
        # Pixels without data (NaN, and beyond the raster's edge) come as 0 in every band.
        valid = (tile != 0).any(axis=0)
        p_veg = tile_vegetation(_bands_of(tile), valid)
        if not self.rows:
            return np.stack([1 - p_veg, p_veg])
        out = np.zeros((4, *p_veg.shape), np.float32)
        out[0] = 1 - p_veg
        veg = p_veg > 0.5
        rows = find_rows(veg, valid)
        if not rows.found:
            out[3] = p_veg
            return out
        crop, _ = label_rows(veg, rows, colour_features(tile, valid))
        # Pixels just outside the vegetation keep the class of the plant beside them.
        share = np.where(veg, crop, ndimage.maximum_filter(crop, 3)).astype(np.float32)
        out[1] = p_veg * share
        out[2] = p_veg * (1 - share)
        return out

    def run(
        self,
        tiles: np.ndarray,
        weight: np.ndarray | None,
        model_tile: int | None,
        tta: bool,
        threads: int,
        refine: RefineChoice = "none",
    ) -> tuple[np.ndarray, float]:
        """See :meth:`~agriseg.inference.Predictor.probabilities` (``model_tile``, ``tta``,
        ``threads`` and ``refine`` do not apply: the classes come from the pixels)."""
        start = time.perf_counter()
        probs = np.stack([self.tile_probabilities(t) for t in tiles])
        if weight is not None:
            probs *= weight
        return probs, time.perf_counter() - start


def bands_for_input(input_path: Path, meta: ModelMeta) -> ModelMeta:
    """``meta`` reading the bands ``input_path`` offers (see :func:`input_bands`); as it is
    when the file cannot be read (opening the input reports that)."""
    try:
        # A plain photo is valid input: no warning for its missing georeferencing.
        with open_dataset(input_path) as src:
            available = find_bands(src, ("red", "green", "blue", "nir"))
    except (OSError, RasterioError):
        return meta
    return replace(meta, bands=input_bands(tuple(available), meta.name))


#: Edge of the windows the rows of a finished run are measured in, in metres (a few
#: metres: rows that bend or change direction are measured window by window), and
#: in pixels where the GSD is unknown.
EVIDENCE_WINDOW_M, EVIDENCE_WINDOW_PX = 5.0, 512


def _windows(height: int, width: int, edge: int) -> Iterator[Window]:
    """Windows of at most ``edge`` px tiling a raster, row by row."""
    for row in range(0, height, edge):
        for col in range(0, width, edge):
            yield Window(col, row, min(edge, width - col), min(edge, height - row))


def rows_evidence(
    classes_path: Path, classes: ClassList, transform: Affine, gsd_m: float | None
) -> dict[str, Any]:
    """What the rows of a finished ``rows`` run look like, window by window of its class
    raster: ``direction_deg`` (anticlockwise from the map's east, 0-180; the mean over
    the windows with rows), ``spacing_m`` (median; pixels without a GSD),
    ``found_share`` (share of the vegetation that stands where rows were found),
    ``regularity`` (median over those windows, 0-1: see :mod:`agriseg.models.croprows`) and the
    window counts."""
    on_rows = np.array(classes.ids_with_role("crop") + classes.ids_with_role("weed"), np.uint8)
    off_rows = np.array(classes.ids_with_role("other"), np.uint8)
    edge = EVIDENCE_WINDOW_PX
    if gsd_m:
        edge = int(min(max(EVIDENCE_WINDOW_M / gsd_m, 128), 2048))
    angles, spacings, regularity, weights = [], [], [], []
    on_px = off_px = 0
    with open_dataset(classes_path) as src:
        for window in _windows(src.height, src.width, edge):
            ids = src.read(1, window=window)
            valid = ids != NODATA
            veg = np.isin(ids, on_rows) | np.isin(ids, off_rows)
            if not valid.any() or veg.sum() < MIN_COVER * valid.sum():
                continue
            on, off = int(np.isin(ids, on_rows).sum()), int(np.isin(ids, off_rows).sum())
            on_px, off_px = on_px + on, off_px + off
            if on <= off:
                continue
            rows = find_rows(veg, valid)
            if rows.found:
                angles.append(rows.angle)
                spacings.append(rows.spacing)
                regularity.append(rows.regularity)
                weights.append(float(veg.sum()))
    evidence: dict[str, Any] = {
        "found_share": round(on_px / (on_px + off_px), 4) if on_px + off_px else 0.0,
        "windows_with_rows": len(angles),
        "window_m": round(edge * gsd_m, 2) if gsd_m else None,
        "window_px": edge,
        "direction_deg": None,
        "spacing_m": None,
        "spacing_px": None,
        "regularity": None,
    }
    if angles:
        # Directions are axial (0 and 180 are one): the mean of the doubled angles.
        c, s = np.cos(angles), np.sin(angles)
        dx, dy = transform.a * c + transform.b * s, transform.d * c + transform.e * s
        doubled = 2 * np.arctan2(dy, dx)
        w = np.asarray(weights)
        mean = math.atan2(float((w * np.sin(doubled)).sum()), float((w * np.cos(doubled)).sum()))
        spacing_px = float(np.median(spacings))
        evidence.update(
            direction_deg=round(math.degrees(mean / 2) % 180.0, 2),
            spacing_px=round(spacing_px, 2),
            spacing_m=round(spacing_px * gsd_m, 4) if gsd_m else None,
            regularity=round(float(np.median(regularity)), 3),
        )
    return evidence


def vegetation_evidence(
    info: RasterInfo, model_bands: Sequence[str], classes_path: Path, classes: ClassList
) -> dict[str, Any]:
    """How cleanly the index separates what a finished run called vegetation from soil:
    ``gap``, the distance of the two classes' mean index over their pooled spread
    (above ~3: two clean modes; below ~1.5: the classes overlap and the cover is
    doubtful), over the whole survey, window by window of :data:`EVIDENCE_WINDOW_PX`;
    and for the colour index ``chroma``, the mean spread of a pixel's red, green and
    blue over its brightness (0: a grey image, where the index only sees brightness
    and its separation means nothing; None with NDVI)."""
    veg_ids = np.array([c.id for c in classes if c.role != "background"], np.uint8)
    sums = np.zeros((2, 3))  # soil, vegetation: count, sum, sum of squares
    rgb = [model_bands.index(b) for b in ("red", "green", "blue") if b in model_bands]
    chroma = np.zeros(2)  # sum, count
    index = "ndvi" if "nir" in model_bands else "cive"
    plain = info.crs is None
    with open_dataset(classes_path) as src:
        for window in _windows(info.height, info.width, EVIDENCE_WINDOW_PX):
            ids = src.read(1, window=window)
            data = read_window(info.path, info.bands, window, plain)
            valid = np.isfinite(data).all(axis=0) & (ids != NODATA)
            if not valid.any():
                continue
            bands = dict(zip(model_bands, np.nan_to_num(data), strict=True))
            if "nir" not in model_bands and len(rgb) == 3:
                colours = np.nan_to_num(data[rgb][:, valid]).astype(np.float64)
                spread = colours.max(axis=0) - colours.min(axis=0)
                chroma += (
                    float((spread / np.maximum(colours.mean(axis=0), 1e-9)).sum()),
                    spread.size,
                )
            values = index_values(bands, valid)
            veg = np.isin(ids, veg_ids)
            for k, mask in enumerate((valid & ~veg, valid & veg)):
                v = values[mask].astype(np.float64)
                sums[k] += (v.size, v.sum(), (v * v).sum())
    evidence: dict[str, Any] = {"index": index, "gap": None, "chroma": None}
    if chroma[1]:
        evidence["chroma"] = round(float(chroma[0] / chroma[1]), 4)
    if sums[:, 0].min() > 1:
        mean = sums[:, 1] / sums[:, 0]
        var = np.maximum(sums[:, 2] / sums[:, 0] - mean**2, 0)
        evidence["gap"] = round(float((mean[1] - mean[0]) / max(np.sqrt(var.mean()), 1e-9)), 3)
    return evidence

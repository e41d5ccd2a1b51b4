"""A network that tells plants apart, with soil and plant told apart by the index.

Bah, Hafiane & Canals (2018) take the soil out of a survey with a vegetation index and
let the network they trained on the survey's own rows say which plant is crop and which
is weed. A model whose metadata has ``vegetation_mask="index"`` (the networks
``agriseg train --labels rows`` makes, see :mod:`agriseg.learning.row_labels`) runs
that way: each tile's soil probability is the index's (:func:`~agriseg.models.vegetation.
tile_vegetation`, on the tile's own pixels, as ``--model vegetation`` computes it) and
the plant classes share the rest in the network's proportions. The index draws the
plant edges to the pixel where a network blurs them; the network tells crop from weed
wherever they stand, in the rows or between them.
"""

from __future__ import annotations

import numpy as np

from agriseg.models.index_engine import BAND_SETS
from agriseg.models.meta import ModelMeta
from agriseg.models.vegetation import tile_vegetation


def _has_index_bands(meta: ModelMeta) -> bool:
    """Whether ``meta``'s bands give a vegetation index (the bands the index models read)."""
    return any(set(meta.bands) >= set(bands) for bands in BAND_SETS)


def plants_on_index(probs: np.ndarray, tiles: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """``probs`` ``(N, C, H, W)`` of normalised ``tiles`` ``(N, B, H, W)`` with the soil
    class's probability taken from each tile's vegetation index (in place).

    Pixels without data come normalised to 0 in every band: the index leaves them
    out of its threshold and calls them soil (they end up nodata).
    """
    soil = [c.id for c in meta.classes if c.role == "background"]
    if not soil or not _has_index_bands(meta):
        return probs
    background = soil[0]
    plants = [c.id for c in meta.classes if c.id != background]
    norm = meta.normalization
    mean = np.asarray(norm.mean, np.float32)[:, None, None]
    std = np.asarray(norm.std, np.float32)[:, None, None]
    for tile, p in zip(tiles, probs, strict=True):
        valid = (tile != 0).any(axis=0)
        raw = tile * std + mean  # the pixels over their full scale: indices are ratios
        p_veg = tile_vegetation(dict(zip(meta.bands, raw, strict=True)), valid)
        share = p[plants]
        share /= np.maximum(share.sum(axis=0), np.float32(1e-6))
        p[plants] = share * p_veg
        p[background] = 1 - p_veg
    return probs

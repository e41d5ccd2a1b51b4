"""What a run notes of every block for its reliability verdict, from pixels already read.

The verdict (:mod:`agriseg.reliability`) weighs the input's mean colour, a vegetation
index's histogram split by what the model called vegetation, and the confidence
histogram. These come from the input pixels under each block, which the chunk task
that segments the block has just read: the chunk notes its core's band sums and index
bins (:func:`core_evidence`), the stitch task adds the classes and confidence
(:func:`block_evidence`), and only a few histograms travel back to the run. The
input is read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agriseg.classes import NODATA
from agriseg.models.vegetation import VegetationIndex, bin_of, compute_index, histogram_bins

#: Confidence histogram bins: 0-100 %.
CONFIDENCE_BINS = 101


@dataclass(frozen=True)
class EvidencePlan:
    """Which bands a chunk reads for the model and the index, and how to bin the index.

    Attributes:
        read: 1-based bands a chunk reads (the model's and the index's).
        model_rows: Rows of the read data that feed the model, in the model's order.
        index: The vegetation index, or None (no bands for one).
        index_rows: Rows of the read data the index takes, in its order.
        vegetation: Whether each class id (0-255) is vegetation.
    """

    read: tuple[int, ...]
    model_rows: tuple[int, ...]
    index: VegetationIndex | None
    index_rows: tuple[int, ...]
    vegetation: np.ndarray

    @property
    def index_bins(self) -> int:
        return 0 if self.index is None else histogram_bins(self.index)


@dataclass(frozen=True)
class CoreEvidence:
    """What a chunk notes of its core's input pixels."""

    band_sum: np.ndarray  # (model bands,) float64 over the valid pixels
    valid: int  # valid pixels
    bins: np.ndarray | None  # (core h, core w) int16 index bins, -1: undefined or invalid


@dataclass(frozen=True)
class BlockEvidence:
    """What a finished block adds to the run's evidence."""

    band_sum: np.ndarray
    valid: int
    confidence: np.ndarray  # (CONFIDENCE_BINS,) pixel counts
    index_all: np.ndarray | None  # (index bins,) pixel counts
    index_vegetation: np.ndarray | None  # the same, of the pixels called vegetation


def core_evidence(plan: EvidencePlan, core: np.ndarray) -> CoreEvidence:
    """Note a chunk's core: ``core`` is its read data there (plan's bands, NaN invalid)."""
    model = core[list(plan.model_rows)]
    ok = np.isfinite(model).all(axis=0)
    if ok.all():  # the same sums without copying the valid pixels out
        band_sum = model.reshape(len(model), -1).sum(axis=1, dtype="float64")
    else:
        band_sum = model[:, ok].sum(axis=1, dtype="float64")
    bins = None
    if plan.index is not None:
        values = compute_index(plan.index, core[list(plan.index_rows)])
        defined = np.isfinite(values)
        bins = np.full(values.shape, -1, np.int16)
        bins[defined] = bin_of(plan.index, values[defined])
    return CoreEvidence(band_sum, int(ok.sum()), bins)


def block_evidence(
    plan: EvidencePlan, core: CoreEvidence, classes: np.ndarray, confidence: np.ndarray
) -> BlockEvidence:
    """A finished block's evidence: its chunk's notes with its classes and confidence."""
    known = classes != NODATA
    # Bin 0 of each count takes what is left out (unknown, undefined): no masked copies.
    shifted = np.where(known, confidence + np.uint8(1), np.uint8(0))  # 0-100: no overflow
    counts = np.bincount(shifted.ravel(), minlength=CONFIDENCE_BINS + 1)[1 : CONFIDENCE_BINS + 1]
    index_all = index_vegetation = None
    if core.bins is not None:
        n = plan.index_bins
        bins = np.where(known, core.bins + np.int16(1), np.int16(0))
        index_all = np.bincount(bins.ravel(), minlength=n + 1)[1:]
        inside = np.where(plan.vegetation[classes], bins, np.int16(0))
        index_vegetation = np.bincount(inside.ravel(), minlength=n + 1)[1:]
    return BlockEvidence(core.band_sum, core.valid, counts, index_all, index_vegetation)

"""Dense CRF refinement of class probabilities (Krähenbühl & Koltun 2011, as in DeepLab).

A fully connected conditional random field pulls each pixel's class towards those of
pixels nearby (a Gaussian kernel: smoothness) and of pixels nearby *and* alike in
colour (a bilateral kernel: edges follow the image). It runs per tile, inside the
tiling, on the model's probabilities and the tile's own pixels: the tile overlap is
its halo, and the raised-cosine blending, which gives a tile's edge almost no weight,
hides where a tile's field of view ends. Memory is one tile's, whatever the raster.

The CRF is Philipp Krähenbühl's C++ code through ``pydensecrf2`` (an optional extra:
``pip install 'agriseg[crf]'``), imported only when a run asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    """The CRF's kernels, in pixels and 8-bit intensity steps.

    The defaults were chosen on two generated surveys that are neither training nor
    held-out surveys (seeds 20001-20002, 1.5 and 3 cm, default model): a wide, strong
    bilateral kernel and almost no smoothness kernel, which erased small weeds.

    Attributes:
        iterations: mean-field iterations.
        smooth_px, smooth_weight: the Gaussian (smoothness) kernel's width and weight.
        edge_px, edge_intensity, edge_weight: the bilateral (appearance) kernel's
            spatial width, its width in intensity (0-255 per band) and its weight.
    """

    iterations: int = 5
    smooth_px: float = 1.0
    smooth_weight: float = 1.0
    edge_px: float = 60.0
    edge_intensity: float = 13.0
    edge_weight: float = 8.0


def crf_probabilities(
    probs: np.ndarray, image: np.ndarray, params: CRFParams = CRFParams()
) -> np.ndarray:
    """The CRF's marginals ``(C, H, W)`` float32 for one tile.

    ``probs`` are softmax probabilities ``(C, H, W)``; ``image`` is the tile's bands
    ``(B, H, W)`` on a 0-255 scale (any number of bands: each is a channel of the
    bilateral kernel).
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, unary_from_softmax

    classes, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype("float32"))))
    crf.addPairwiseGaussian(
        sxy=params.smooth_px,
        compat=params.smooth_weight,
        kernel=dcrf.DIAG_KERNEL,
        normalization=dcrf.NORMALIZE_SYMMETRIC,
    )
    features = create_pairwise_bilateral(
        sdims=(params.edge_px, params.edge_px),
        schan=(params.edge_intensity,) * image.shape[0],
        img=np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype="float32"),
        chdim=2,
    )
    crf.addPairwiseEnergy(
        features,
        compat=params.edge_weight,
        kernel=dcrf.DIAG_KERNEL,
        normalization=dcrf.NORMALIZE_SYMMETRIC,
    )
    marginals = np.asarray(crf.inference(params.iterations), dtype="float32")
    return marginals.reshape(classes, height, width)


def refine_tiles(
    probs: np.ndarray, images: np.ndarray, params: CRFParams = CRFParams()
) -> np.ndarray:
    """:func:`crf_probabilities` for each tile of a batch: ``probs`` ``(N, C, H, W)``,
    ``images`` ``(N, B, H, W)`` on a 0-255 scale."""
    return np.stack(
        [crf_probabilities(p, image, params) for p, image in zip(probs, images, strict=True)]
    )

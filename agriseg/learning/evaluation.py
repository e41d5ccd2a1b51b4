"""``agriseg evaluate``: segment a labelled raster with the real pipeline and score it.

Scores come from :mod:`agriseg.learning.metrics`, accumulated over the class raster's blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agriseg.classes import NODATA, ClassList
from agriseg.config import RunConfig
from agriseg.io.raster import open_dataset, open_raster
from agriseg.learning.datasets import LabelColors
from agriseg.learning.labels import Grid, Labels
from agriseg.learning.metrics import Scores, confusion_matrix, scores
from agriseg.models.registry import find_model
from agriseg.run import Progress, segment_raster


def compare_rasters(
    classes_path: Path,
    labels_path: Path,
    classes: ClassList | None = None,
    label_column: str = "class",
    progress: Callable[[int, int], None] | None = None,
    label_colors: LabelColors | None = None,
) -> Scores:
    """Score a class raster against labels on its grid, one raster block at a time.

    ``classes`` are the predicted classes; ``None``: those the class raster's
    ``class_N`` tags name, else :data:`DEFAULT_CLASSES`. Pixels unlabelled in the truth
    are ignored; labelled pixels the prediction left empty (nodata input) are counted
    as ``unpredicted`` and kept out of the scores.
    """
    unpredicted = 0
    with open_dataset(classes_path) as src:
        if classes is None:
            classes = ClassList.of_class_raster(src)
        n = len(classes)
        cm = np.zeros((n, n), dtype="int64")
        grid = Grid.of_dataset(src)
        labels = Labels(labels_path, grid, classes, label_column, colors=label_colors)
        blocks = [w for _, w in src.block_windows(1)]
        for done, window in enumerate(blocks, start=1):
            pred = src.read(1, window=window)
            truth = labels.read(window)
            cm += confusion_matrix(truth, pred, n)
            unpredicted += int(np.count_nonzero((truth != NODATA) & (pred == NODATA)))
            if progress is not None:
                progress(done, len(blocks))
    return scores(cm, classes, unpredicted)


@dataclass
class EvaluationResult:
    """Scores of one raster and the outputs of the run that produced them."""

    scores: Scores
    outputs: dict[str, Path]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.summary["input"]["path"],
            "model": self.summary["model"],
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            **self.scores.to_dict(),
        }


def evaluate_raster(
    raster: Path,
    labels_path: Path,
    out_dir: Path,
    config: RunConfig,
    label_column: str = "class",
    progress: Progress | None = None,
    label_colors: LabelColors | None = None,
) -> EvaluationResult:
    """Segment ``raster`` with the real pipeline into ``out_dir`` and score it against
    labels mapped onto the model's classes (checked before segmenting)."""
    _, meta = find_model(config.model)
    classes = meta.classes
    info = open_raster(raster, meta.bands, config.bands, config.assume_crs)
    grid = info.grid
    # Unusable labels fail here, before the (long) segmentation starts.
    Labels(labels_path, grid, classes, label_column, colors=label_colors)
    result = segment_raster(raster, out_dir, config, progress)
    found = compare_rasters(
        result.outputs["classes"], labels_path, classes, label_column, label_colors=label_colors
    )
    return EvaluationResult(found, result.outputs, result.summary)

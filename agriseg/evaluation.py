"""Accuracy of a class raster against ground-truth labels.

Everything goes through one confusion matrix (rows: truth, columns: prediction),
accumulated window by window with :func:`numpy.bincount`, so rasters of any size
are scored in bounded memory. Training validation uses the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList
from agriseg.config import RunConfig
from agriseg.datasets import LabelColors
from agriseg.labels import Grid, Labels
from agriseg.models import checkpoint_paths, read_meta, resolve
from agriseg.pipeline import Progress, segment_raster
from agriseg.raster import open_dataset, open_raster


@dataclass(frozen=True)
class ClassScores:
    """Scores of one class; ``nan`` where undefined (class absent from truth and prediction)."""

    name: str
    iou: float
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """Per-class scores, their means and the confusion matrix they come from."""

    classes: tuple[ClassScores, ...]
    miou: float
    mean_f1: float
    accuracy: float
    confusion: np.ndarray
    unpredicted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``nan`` becomes ``None``."""
        return {
            "miou": _clean(self.miou),
            "mean_f1": _clean(self.mean_f1),
            "accuracy": _clean(self.accuracy),
            "classes": {
                c.name: {
                    "iou": _clean(c.iou),
                    "precision": _clean(c.precision),
                    "recall": _clean(c.recall),
                    "f1": _clean(c.f1),
                    "support": c.support,
                }
                for c in self.classes
            },
            "confusion_matrix": {
                "rows": "truth",
                "columns": "prediction",
                "classes": [c.name for c in self.classes],
                "counts": self.confusion.tolist(),
            },
            "labelled_pixels": int(self.confusion.sum()),
            "unpredicted_pixels": self.unpredicted,
        }


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n)`` int64 counts of (truth, prediction) pairs; pixels with either ≥ n are skipped."""
    t = np.asarray(truth).ravel().astype("int64")
    p = np.asarray(prediction).ravel().astype("int64")
    keep = (t < n_classes) & (p < n_classes) & (t >= 0) & (p >= 0)
    flat = t[keep] * n_classes + p[keep]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(confusion: np.ndarray, classes: ClassList, unpredicted: int = 0) -> Scores:
    """IoU, precision, recall and F1 per class of ``classes``, mIoU, mean F1 and pixel accuracy.

    Means are over the classes that occur in the truth or the prediction.
    """
    cm = np.asarray(confusion, dtype="int64")
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix {cm.shape} does not fit {len(classes)} classes")
    tp = np.diag(cm).astype("float64")
    truth = cm.sum(axis=1).astype("float64")
    predicted = cm.sum(axis=0).astype("float64")
    iou = _ratio(tp, truth + predicted - tp)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, truth)
    f1 = _ratio(2 * tp, truth + predicted)
    present = ~np.isnan(iou)
    total = cm.sum()
    return Scores(
        classes=tuple(
            ClassScores(name, iou[i], precision[i], recall[i], f1[i], int(truth[i]))
            for i, name in enumerate(classes.names)
        ),
        miou=float(iou[present].mean()) if present.any() else math.nan,
        mean_f1=float(f1[present].mean()) if present.any() else math.nan,
        accuracy=float(tp.sum() / total) if total else math.nan,
        confusion=cm,
        unpredicted=unpredicted,
    )


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
            classes = ClassList.from_tags(src.tags()) or DEFAULT_CLASSES
        n = len(classes)
        cm = np.zeros((n, n), dtype="int64")
        grid = Grid(src.height, src.width, src.transform, src.crs)
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
    meta = read_meta(checkpoint_paths(resolve(config.model))[1])
    classes = meta.classes
    info = open_raster(raster, meta.bands, config.bands, config.assume_crs)
    grid = Grid(info.height, info.width, info.transform, info.crs)
    # Unusable labels fail here, before the (long) segmentation starts.
    Labels(labels_path, grid, classes, label_column, colors=label_colors)
    result = segment_raster(raster, out_dir, config, progress)
    found = compare_rasters(
        result.outputs["classes"], labels_path, classes, label_column, label_colors=label_colors
    )
    return EvaluationResult(found, result.outputs, result.summary)

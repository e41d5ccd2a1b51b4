"""Segmentation metrics: one confusion matrix, and IoU, precision, recall and F1 from it.

Rows are the truth, columns the prediction; matrices are accumulated window by window
with :func:`numpy.bincount`, so rasters of any size are scored in bounded memory.
Training validation and ``agriseg evaluate`` use the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agriseg.classes import ClassList


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

"""``agriseg evaluate``: segment labelled images with the real pipeline and score them.

Scores come from :mod:`agriseg.learning.metrics`, accumulated over each class raster's blocks;
over many images the confusion matrices are pooled (summed), so the pooled scores
weigh every labelled pixel alike, and each image keeps its own scores too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agriseg.classes import NODATA, ClassList
from agriseg.config import RunConfig
from agriseg.errors import InputError
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
    label_layer: str | None = None,
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
        labels = Labels(labels_path, grid, classes, label_column, label_layer, label_colors)
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
    label_layer: str | None = None,
) -> EvaluationResult:
    """Segment ``raster`` with the real pipeline into ``out_dir`` and score it against
    labels mapped onto the model's classes (checked before segmenting)."""
    classes = check_labels(raster, labels_path, config, label_column, label_colors, label_layer)
    result = segment_raster(raster, out_dir, config, progress)
    found = compare_rasters(
        result.outputs["classes"], labels_path, classes, label_column, None, label_colors,
        label_layer,
    )  # fmt: skip
    return EvaluationResult(found, result.outputs, result.summary)


def check_labels(
    raster: Path,
    labels_path: Path,
    config: RunConfig,
    label_column: str = "class",
    label_colors: LabelColors | None = None,
    label_layer: str | None = None,
) -> ClassList:
    """The model's classes, once the labels are known to be readable on ``raster``'s
    grid in them: unusable labels fail before the (long) segmentation starts."""
    _, meta = find_model(config.model)
    info = open_raster(raster, meta.bands, config.bands, config.assume_crs)
    Labels(labels_path, info.grid, meta.classes, label_column, label_layer, label_colors)
    return meta.classes


@dataclass(frozen=True)
class ImageScores:
    """The scores of one labelled image."""

    image: Path
    labels: Path
    scores: Scores


@dataclass(frozen=True)
class Evaluation:
    """Scores of a set of labelled images: per image, and pooled over all of them."""

    model: str
    classes: ClassList
    images: tuple[ImageScores, ...]
    pooled: Scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "n_images": len(self.images),
            **self.pooled.to_dict(),
            "per_image": [
                {
                    "image": str(i.image),
                    "labels": str(i.labels),
                    "miou": i.scores.to_dict()["miou"],
                    "accuracy": i.scores.to_dict()["accuracy"],
                    "labelled_pixels": int(i.scores.confusion.sum()),
                    "iou": {c: v["iou"] for c, v in i.scores.to_dict()["classes"].items()},
                }
                for i in self.images
            ],
        }


#: Called as ``progress(images_done, images_total)``; ``images_done`` grows by
#: fractions of an image as its tiles are segmented.
ImageProgress = Callable[[float, int], None]


def evaluate_files(
    pairs: Sequence[tuple[Path, Path]],
    config: RunConfig,
    out_dir: Path | None = None,
    label_column: str = "class",
    label_colors: LabelColors | None = None,
    label_layer: str | None = None,
    progress: ImageProgress | None = None,
) -> Evaluation:
    """Segment each image of ``(image, labels)`` pairs and score it; pool the scores.

    Every pair's labels are checked before the first image is segmented. The run
    outputs go into ``out_dir`` (``<stem>.classes.tif``...); ``None``: a temporary
    folder, removed afterwards.

    Raises:
        InputError: No pairs, two images with the same file stem (their outputs would
            collide), or labels unusable with the model.
    """
    if not pairs:
        raise InputError("no labelled images to evaluate")
    stems: dict[str, Path] = {}
    for image, _ in pairs:
        if image.stem in stems:
            raise InputError(
                f"{stems[image.stem]} and {image} have the same name; their outputs would "
                "collide: evaluate them separately"
            )
        stems[image.stem] = image
    classes = [
        check_labels(image, labels, config, label_column, label_colors, label_layer)
        for image, labels in pairs
    ][0]
    n = len(classes)
    pooled = np.zeros((n, n), dtype="int64")
    unpredicted = 0
    found: list[ImageScores] = []
    with tempfile.TemporaryDirectory(prefix="agriseg-evaluate-") as tmp:
        folder = out_dir if out_dir is not None else Path(tmp)
        for k, (image, labels) in enumerate(pairs):

            def tiles(done: int, total: int, k: int = k) -> None:
                if progress is not None and total:
                    progress(k + done / total, len(pairs))

            result = evaluate_raster(
                image, labels, folder, config, label_column, tiles, label_colors, label_layer
            )
            found.append(ImageScores(image, labels, result.scores))
            pooled += result.scores.confusion
            unpredicted += result.scores.unpredicted
            if progress is not None:
                progress(k + 1, len(pairs))
    return Evaluation(config.model, classes, tuple(found), scores(pooled, classes, unpredicted))

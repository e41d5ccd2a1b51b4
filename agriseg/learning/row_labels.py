"""Training labels from a survey's own crop rows (self-training without a hand label).

Bah, Hafiane & Canals (2018) label the vegetation between the rows of a survey as weed
and the vegetation on them as crop, then train a network on those labels: the network
learns what crop and weed look like on *this* field, so it also finds the weeds that
stand in the rows and the crop where the rows are hard to see. Here the labels are a
``--model rows`` run of the survey (:mod:`agriseg.models.index_engine`), with every
pixel that run is unsure of left unlabelled (255, ignored by the loss):

* vegetation off rows (headlands, gaps, a tile without rows): no class is known;
* pixels whose confidence is below :data:`SURE_CONFIDENCE`: the index barely tells
  plant from soil there (mixed pixels at plant edges, pale or shaded leaves);
* where crop and weed meet (a plant pixel whose 3 x 3 neighbourhood holds the other
  plant class): the row band's edge.

Small weeds keep their labels: on a generated survey at 1.9 cm (seed 30005), labels cut
this way cover 43 % of the weed pixels at a precision of 0.88, where dropping the
edges of every region kept 5 % of them (precision 0.97), too few to learn weeds from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from scipy import ndimage

from agriseg.classes import NODATA, ClassList, FieldClass, Role
from agriseg.config import HealthOptions, RunConfig
from agriseg.errors import InputError
from agriseg.io.atomic import atomic_output
from agriseg.run import segment_raster

#: The classes a network trained on row labels predicts.
ROW_LABEL_CLASSES = ClassList(
    (
        FieldClass(0, "soil", (150, 105, 60), "background"),
        FieldClass(1, "crop", (40, 160, 50), "crop"),
        FieldClass(2, "weed", (230, 40, 160), "weed"),
    )
)

#: Rows-model class id -> training label (plants off rows: unlabelled).
_LABEL_OF = np.array([0, 1, 2, NODATA], np.uint8)

#: Confidence (percent, the run's confidence raster) below which a pixel stays
#: unlabelled: the vegetation index is within a fifth of certainty of the threshold.
SURE_CONFIDENCE = 80

#: Roles of the row labels' soil, crop and weed.
_ROLES: tuple[Role, ...] = ("background", "crop", "weed")


def label_classes_for(base: ClassList | None) -> ClassList:
    """The classes row labels are written in: ``base``'s (a ``--from`` model's, which
    then keeps every class it has) when it has a soil, a crop and a weed class, else
    :data:`ROW_LABEL_CLASSES`."""
    if base is not None and all(base.ids_with_role(r) for r in _ROLES):
        return base
    return ROW_LABEL_CLASSES


def row_labels(
    classes: np.ndarray,
    confidence: np.ndarray | None = None,
    target: ClassList = ROW_LABEL_CLASSES,
) -> np.ndarray:
    """Training labels (ids of ``target``'s soil, crop and weed classes, found by role;
    255 unlabelled) of a ``rows`` model's class raster and its confidence raster: its
    sure pixels only (see the module docstring); without ``confidence`` every pixel's
    class is taken as sure."""
    labels = np.full(classes.shape, NODATA, np.uint8)
    known = classes < _LABEL_OF.size
    labels[known] = _LABEL_OF[classes[known]]
    if confidence is not None:
        labels[confidence < SURE_CONFIDENCE] = NODATA
    crop, weed = (ndimage.maximum_filter(labels == k, 3) for k in (1, 2))
    labels[(labels == 1) & weed | (labels == 2) & crop] = NODATA
    lookup = np.full(256, NODATA, np.uint8)
    lookup[:3] = [target.ids_with_role(role)[0] for role in _ROLES]
    return lookup[labels]


def label_with_rows(
    rasters: list[Path], out_dir: Path, target: ClassList = ROW_LABEL_CLASSES
) -> list[Path]:
    """Label each survey by its own rows: runs ``--model rows`` on it into ``out_dir``
    and writes ``<stem>.row-labels.tif`` there (same grid, ids of ``target``, see
    :func:`row_labels`); returns those files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(model="rows", health=HealthOptions(preview=False, polygons="none"))
    written = []
    for raster in rasters:
        if not raster.is_file():
            raise InputError(
                f"{raster}: --labels rows labels survey files one by one; give files, "
                "not a folder or pattern"
            )
        run = segment_raster(raster, out_dir / f"{raster.stem}.rows-run", config)
        with rasterio.open(run.outputs["confidence"]) as src:
            confidence = src.read(1)
        with rasterio.open(run.outputs["classes"]) as src:
            labels = row_labels(src.read(1), confidence, target)
            profile = _label_profile(src.profile)
        if not (labels != NODATA).any():
            raise InputError(
                f"{raster}: no crop rows found (found share "
                f"{run.summary['rows']['found_share']}), so no labels: --labels rows needs "
                "a row crop early in the season"
            )
        path = out_dir / f"{raster.stem}.row-labels.tif"
        with atomic_output(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(labels, 1)
            dst.write_colormap(1, target.colormap())
            dst.update_tags(**target.tags())
        written.append(path)
    return written


def _label_profile(profile: Any) -> dict[str, Any]:
    """The class raster's profile for a label raster: uint8, one band, nodata 255."""
    return {**dict(profile), "driver": "GTiff", "count": 1, "dtype": "uint8", "nodata": NODATA}

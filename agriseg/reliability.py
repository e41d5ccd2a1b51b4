"""How far to trust a run: a verdict (``ok``, ``doubtful``, ``unreliable``) with its
reasons in plain words, drawn from evidence gathered during the run itself.

A model trained on one kind of imagery produces confident-looking maps of anything;
these checks tell a map the model can stand behind from one it cannot:

* ``scale``: the input's ground sampling distance against the range where the model
  was measured to hold up (:mod:`agriseg.segmentation.calibration`); an unknown GSD (a plain
  photo) is a reason in itself;
* ``input``: pixel type and bands against what the model was trained on;
* ``vegetation``: plants found by a spectral index with the image's own threshold
  (:mod:`agriseg.models.vegetation`), against the model's vegetation (crop, weed and
  disease roles); a model that sees plants where the index sees soil, or the
  reverse, misreads the imagery;
* ``confidence``: the share of pixels the model was unsure of, against what it
  showed on held-out surveys;
* ``colour``: the image's band means against the training images' (the model's
  normalisation), in training standard deviations.

The models without a network (``vegetation``, ``rows``) have no training images and
are the index themselves, so the last three checks say nothing of them; they report
their own evidence instead (:func:`agriseg.run.model_evidence`), judged by:

* ``index_gap``: how cleanly the index separates what the run called plants from soil
  (``vegetation_index.gap``); a grey or colourless image separates poorly;
* ``chroma`` (the colour index): how much colour the image has; a grey image leaves
  the colour index only brightness, and its separation then means nothing;
* ``rows`` (the ``rows`` model): the share of the vegetation standing where rows were
  found (``rows.found_share``: crop and weed are told apart only there) and how
  regular the rows are.

Which checks a model uses is part of its calibration (``checks_used``).

Thresholds come from the model's calibration (``scripts/calibrate_reliability.py``);
a model without one gets :data:`DEFAULT_THRESHOLDS` and a ``doubtful`` verdict.
:class:`RunEvidence` gathers the evidence block by block, in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agriseg.classes import VEGETATION_ROLES
from agriseg.errors import ModelError
from agriseg.health.verdict import Check, Reliability, Verdict, judge, worst
from agriseg.io.raster import RasterInfo, open_dataset
from agriseg.io.spectral import band_names, find_bands
from agriseg.models.meta import ModelMeta, pixel_kind
from agriseg.models.vegetation import (
    Separation,
    VegetationHistogram,
    index_bands,
    index_for,
)
from agriseg.segmentation.calibration import Calibration
from agriseg.segmentation.evidence import CONFIDENCE_BINS, BlockEvidence, EvidencePlan
from agriseg.segmentation.scale import Scale, format_gsd

#: Confidence (0-100) below which a pixel counts as unsure.
LOW_CONFIDENCE = 60

#: Bands only multispectral cameras and satellites have.
SPECTRAL_ONLY = ("red_edge", "nir", "swir1", "swir2", "coastal")

#: Thresholds of a model without calibration: generous, since nothing was measured.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "vegetation": {
        "doubtful_iou": 0.5,
        "unreliable_iou": 0.25,
        "doubtful_cover_gap": 0.2,
        "unreliable_cover_gap": 0.35,
        "min_gap": 1.5,
        "bare_cover": 0.02,
    },
    "confidence": {"doubtful_low_share": 0.25, "unreliable_low_share": 0.45},
    "colour": {"doubtful_distance": 2.5, "unreliable_distance": 5.0},
    # Without a measured range: ratios of the input's GSD to the model's.
    "scale": {"holds_ratio": 2.0, "usable_ratio": 4.0},
    # Index models: the gap below ~1.5 means overlapping classes (see
    # agriseg.models.index_engine.vegetation_evidence).
    "index_gap": {"doubtful_gap": 1.5, "unreliable_gap": 1.0},
    "chroma": {"doubtful_chroma": 0.2, "unreliable_chroma": 0.1},
    "rows": {"doubtful_found_share": 0.5, "doubtful_regularity": 0.2},
}

#: Checks of a model with a network, and of one without (see the module doc), when
#: its calibration does not list them.
NETWORK_CHECKS = ("scale", "input", "vegetation", "confidence", "colour")
INDEX_CHECKS = ("scale", "input", "index_gap", "chroma", "rows")


def check_scale(scale: Scale, calibration: Calibration, model_gsd_m: float | None) -> Check:
    """The input's GSD against where the model holds up (see the module doc)."""
    gsd = scale.input_gsd_m
    values: dict[str, Any] = {"input_gsd_m": gsd, "target_gsd_m": scale.target_gsd_m}
    if gsd is None and calibration.any_gsd:
        return Check("scale", "ok", None, values)
    if gsd is None:
        return Check(
            "scale",
            "doubtful",
            "unknown ground sampling distance (plain photo): the model cannot see plants "
            "at the size it learnt them; give --gsd",
            values,
        )
    ranges = calibration.scale_range
    if ranges is not None:
        holds = (ranges.holds_from_m, ranges.holds_to_m)
        usable = (ranges.usable_from_m, ranges.usable_to_m)
    elif model_gsd_m:
        ratios = DEFAULT_THRESHOLDS["scale"]
        holds = (model_gsd_m / ratios["holds_ratio"], model_gsd_m * ratios["holds_ratio"])
        usable = (model_gsd_m / ratios["usable_ratio"], model_gsd_m * ratios["usable_ratio"])
    else:
        return Check("scale", "ok", None, values)
    values.update(holds_from_m=holds[0], holds_to_m=holds[1])
    values.update(usable_from_m=usable[0], usable_to_m=usable[1])
    measured = f"measured to hold up from {format_gsd(holds[0])} to {format_gsd(holds[1])}"
    side = "finer" if gsd < holds[0] else "coarser"
    if usable[0] <= gsd <= usable[1]:
        if holds[0] <= gsd <= holds[1]:
            return Check("scale", "ok", None, values)
        return Check(
            "scale",
            "doubtful",
            f"ground sampling distance {format_gsd(gsd)} is {side} than the model is {measured}",
            values,
        )
    return Check(
        "scale",
        "unreliable",
        f"ground sampling distance {format_gsd(gsd)} is far {side} than the model is {measured}",
        values,
    )


def check_input(info: RasterInfo, meta: ModelMeta) -> Check:
    """Pixel type and bands against what the model was trained on."""
    kind = pixel_kind(info.dtype)
    with open_dataset(info.path, plain=info.crs is None) as src:
        names = band_names(src)
    unused = [n for n in names if n in SPECTRAL_ONLY and n not in meta.bands]
    values: dict[str, Any] = {
        "dtype": info.dtype,
        "bands": list(names),
        "model_pixel_kinds": list(meta.pixel_kinds),
        "model_bands": list(meta.bands),
    }
    other_kind = bool(meta.pixel_kinds) and kind not in meta.pixel_kinds
    if other_kind and unused:
        return Check(
            "input",
            "unreliable",
            f"a multispectral {info.dtype} survey (with {', '.join(unused)}), but the model "
            f"learnt {' and '.join(meta.pixel_kinds)} {'/'.join(meta.bands)} images",
            values,
        )
    if other_kind:
        return Check(
            "input",
            "doubtful",
            f"{info.dtype} pixels, but the model learnt {' and '.join(meta.pixel_kinds)} images",
            values,
        )
    return Check("input", "ok", None, values)


def _levels(value: float, doubtful: float, unreliable: float, higher_is_worse: bool) -> Verdict:
    sign = 1 if higher_is_worse else -1
    if sign * value > sign * unreliable:
        return "unreliable"
    if sign * value > sign * doubtful:
        return "doubtful"
    return "ok"


def _graded(
    name: str,
    value: float,
    key: str,
    higher_is_worse: bool,
    limits: dict[str, float],
    values: dict[str, Any],
    reason: Callable[[], str],
) -> Check:
    """Check ``name``: ``value`` against ``limits["doubtful_<key>"]`` and
    ``limits["unreliable_<key>"]``, with ``reason()`` unless it is ok."""
    doubtful, unreliable = limits[f"doubtful_{key}"], limits[f"unreliable_{key}"]
    level = _levels(value, doubtful, unreliable, higher_is_worse)
    return Check(name, level, None if level == "ok" else reason(), values)


def vegetation_values(sep: Separation | None) -> dict[str, Any] | None:
    """What the vegetation check records (and judges, see :func:`check_vegetation`)."""
    if sep is None:
        return None
    return {
        "index": sep.index,
        "threshold": sep.threshold,
        "otsu": sep.otsu,
        "effectiveness": sep.effectiveness,
        "gap": sep.gap,
        "pixels": sep.pixels,
        "index_cover": sep.fraction,
        "model_cover": sep.other_fraction,
        "iou": sep.iou,
    }


def check_vegetation(values: dict[str, Any] | None, limits: dict[str, float]) -> Check:
    """Vegetation by the spectral index against the model's vegetation roles
    (``values``: :func:`vegetation_values`)."""
    if values is None:
        return Check(
            "vegetation", "doubtful", "no vegetation index for these bands: not cross-checked"
        )
    index_cover, model_cover = values["index_cover"], values["model_cover"]
    name = "NDVI" if values["index"] == "ndvi" else "the colour index"
    separated = values["gap"] >= limits["min_gap"]
    unseparated = f"{name} does not separate plants from soil here (separation {values['gap']:.1f})"
    bare = limits["bare_cover"]
    if not separated and model_cover < bare:
        # One mode, no valley: a grey image, or a field without plants.
        return Check("vegetation", "doubtful", f"{unseparated}: not cross-checked", values)
    if not separated and index_cover < bare:
        return Check(
            "vegetation",
            "unreliable",
            f"{unseparated}, yet the model finds {100 * model_cover:.0f}% vegetation",
            values,
        )
    if index_cover < bare and model_cover < bare:
        return Check("vegetation", "ok", None, values)
    iou = values["iou"] or 0.0
    level = worst(
        [
            _levels(iou, limits["doubtful_iou"], limits["unreliable_iou"], False),
            _levels(
                abs(index_cover - model_cover),
                limits["doubtful_cover_gap"],
                limits["unreliable_cover_gap"],
                True,
            ),
            "ok" if separated else "doubtful",
        ]
    )
    if level == "ok":
        return Check("vegetation", "ok", None, values)
    return Check(
        "vegetation",
        level,
        f"{name} finds {100 * index_cover:.0f}% vegetation where the model finds "
        f"{100 * model_cover:.0f}% (overlap {100 * iou:.0f}%)",
        values,
    )


def check_confidence(values: dict[str, Any], limits: dict[str, float]) -> Check:
    """The share of unsure pixels (``values["low_share"]``) against held-out surveys'."""
    low_share = values["low_share"]
    return _graded(
        "confidence",
        low_share,
        "low_share",
        True,
        limits,
        values,
        lambda: (
            f"the model is unsure of {100 * low_share:.0f}% of pixels (held-out surveys: "
            f"under {100 * limits['doubtful_low_share']:.0f}%)"
        ),
    )


def check_colour(values: dict[str, Any], limits: dict[str, float]) -> Check:
    """The band means' distance from the training images' (``values["distance"]``)."""
    distance = values["distance"]
    if distance is None:
        return Check("colour", "ok", None, values)
    return _graded(
        "colour",
        distance,
        "distance",
        True,
        limits,
        values,
        lambda: f"colours unlike the training images ({distance:.1f} standard deviations off)",
    )


def check_index_gap(values: dict[str, Any] | None, limits: dict[str, float]) -> Check:
    """How cleanly the index separates the run's plants from its soil
    (``values``: the summary's ``vegetation_index``)."""
    gap = None if values is None else values.get("gap")
    if values is None or gap is None:
        return Check(
            "index_gap",
            "doubtful",
            "no plants or no soil found: the index's separation could not be measured",
            dict(values or {}),
        )
    name = "NDVI" if values["index"] == "ndvi" else "the colour index"
    return _graded(
        "index_gap",
        gap,
        "gap",
        False,
        limits,
        values,
        lambda: (
            f"{name} separates plants from soil poorly here (separation {gap:.1f}; "
            f"generated surveys: above {limits['doubtful_gap']:.1f}): a grey, hazy or "
            "colourless image, or a field without plants"
        ),
    )


def check_chroma(values: dict[str, Any] | None, limits: dict[str, float]) -> Check:
    """How much colour the colour index had to work with (``values``: the summary's
    ``vegetation_index``; no chroma with NDVI, which needs none)."""
    chroma = None if values is None else values.get("chroma")
    if values is None or chroma is None:
        return Check("chroma", "ok", None, dict(values or {}))
    return _graded(
        "chroma",
        chroma,
        "chroma",
        False,
        limits,
        values,
        lambda: (
            f"almost no colour in the image (chroma {chroma:.2f}; generated surveys: "
            f"above {limits['doubtful_chroma']:.2f}): the colour index sees only brightness here"
        ),
    )


def check_rows(values: dict[str, Any] | None, limits: dict[str, float]) -> Check:
    """Where the ``rows`` model found rows and how regular they are (``values``: the
    summary's ``rows``); the model has no rows check otherwise."""
    if values is None:
        return Check("rows", "ok", None)
    share, regularity = values["found_share"], values.get("regularity")
    if share < limits["doubtful_found_share"]:
        return Check(
            "rows",
            "doubtful",
            f"rows found on only {100 * share:.0f}% of the survey: crop/weed split is only "
            "made there (elsewhere plants are plants_off_rows)",
            values,
        )
    if regularity is None:
        return Check(
            "rows",
            "doubtful",
            "rows found tile by tile but not confirmed over the survey: the crop/weed "
            "split may follow stray lines",
            values,
        )
    if regularity < limits["doubtful_regularity"]:
        return Check(
            "rows",
            "doubtful",
            f"irregular rows (regularity {regularity:.2f}; generated surveys: above "
            f"{limits['doubtful_regularity']:.2f}): weeds may be taken for crop and back",
            values,
        )
    return Check("rows", "ok", None, values)


def thresholds(calibration: Calibration) -> dict[str, dict[str, float]]:
    """The calibrated thresholds, defaults where the calibration has none."""
    return {k: {**v, **calibration.checks.get(k, {})} for k, v in DEFAULT_THRESHOLDS.items()}


class RunEvidence:
    """Evidence gathered block by block while a run writes its class raster.

    :attr:`plan` tells the chunk tasks which bands to read (the model's and the
    vegetation index's) and what to note of them, so the input is read once (see
    :mod:`agriseg.segmentation.evidence`).

    Args:
        info: The validated input.
        meta: The model's metadata.
    """

    def __init__(self, info: RasterInfo, meta: ModelMeta) -> None:
        self.info, self.meta = info, meta
        with open_dataset(info.path, plain=info.crs is None) as src:
            self.index = index_for(band_names(src))
            named = find_bands(src, index_bands(self.index)) if self.index else {}
        if self.index is None and tuple(meta.bands[:3]) == ("red", "green", "blue"):
            # Unnamed bands read as the model's RGB: the model sees them that way too.
            self.index = "exgr"
            named = dict(zip(meta.bands[:3], info.bands[:3], strict=True))
        index_bands_read = [named[n] for n in index_bands(self.index)] if self.index else []
        read = sorted({*info.bands, *index_bands_read})
        rows = {band: i for i, band in enumerate(read)}
        vegetation = np.zeros(256, dtype=bool)
        for c in meta.classes:
            vegetation[c.id] = c.role in VEGETATION_ROLES
        self.plan = EvidencePlan(
            tuple(read),
            tuple(rows[b] for b in info.bands),
            self.index,
            tuple(rows[b] for b in index_bands_read),
            vegetation,
        )
        self.histogram = VegetationHistogram(self.index) if self.index else None
        self.confidence = np.zeros(CONFIDENCE_BINS, dtype="int64")
        self.band_sum = np.zeros(len(info.bands), dtype="float64")
        self.valid = 0
        self._scale = meta.normalization.scale_for(info.dtype)

    def add(self, block: BlockEvidence) -> None:
        """Take a finished block's evidence."""
        self.confidence += block.confidence
        self.band_sum += block.band_sum
        self.valid += block.valid
        if self.histogram is not None and block.index_all is not None:
            assert block.index_vegetation is not None
            self.histogram.add_counts(block.index_all, block.index_vegetation)

    def finish(
        self, scale: Scale, calibration: Calibration, found: dict[str, Any] | None = None
    ) -> Reliability:
        """The verdict of the run from the evidence gathered, and what a model without
        a network ``found`` (:func:`agriseg.run.model_evidence`; None or empty for a
        network)."""
        limits = thresholds(calibration)
        sep = self.histogram.separation() if self.histogram is not None else None
        total = int(self.confidence.sum())
        low = float(self.confidence[:LOW_CONFIDENCE].sum() / total) if total else 0.0
        mean = float((self.confidence * np.arange(101)).sum() / total) if total else 0.0
        means = (self.band_sum / max(self.valid, 1) / self._scale).tolist()
        norm = self.meta.normalization
        distance = None
        if self.valid and len(norm.mean) == len(means):
            z = [(m - mu) / sd for m, mu, sd in zip(means, norm.mean, norm.std, strict=True)]
            distance = math.sqrt(sum(v * v for v in z) / len(z))
        found = found or {}
        makers: dict[str, Callable[[], Check]] = {
            "scale": lambda: check_scale(scale, calibration, self.meta.gsd_m or None),
            "input": lambda: check_input(self.info, self.meta),
            "vegetation": lambda: check_vegetation(vegetation_values(sep), limits["vegetation"]),
            "confidence": lambda: check_confidence(
                {"low_share": round(low, 4), "mean": round(mean, 2), "below": LOW_CONFIDENCE},
                limits["confidence"],
            ),
            "colour": lambda: check_colour(
                {
                    "distance": None if distance is None else round(distance, 3),
                    "means": [round(m, 4) for m in means],
                },
                limits["colour"],
            ),
            "index_gap": lambda: check_index_gap(
                found.get("vegetation_index"), limits["index_gap"]
            ),
            "chroma": lambda: check_chroma(found.get("vegetation_index"), limits["chroma"]),
            "rows": lambda: check_rows(found.get("rows"), limits["rows"]),
        }
        used = calibration.checks_used or (INDEX_CHECKS if found else NETWORK_CHECKS)
        unknown = sorted(set(used) - set(makers))
        if unknown:
            raise ModelError(
                f"{calibration.path}: unknown reliability checks {', '.join(unknown)} in "
                f"checks_used; use some of {', '.join(makers)}"
            )
        checks = [makers[name]() for name in used if name != "rows" or "rows" in found]
        if not calibration.calibrated:
            checks.append(
                Check(
                    "calibration",
                    "doubtful",
                    f"model {self.meta.name} has no reliability calibration: "
                    "how far it holds up on this imagery was never measured",
                )
            )
        return Reliability(judge(checks), tuple(checks), _name(calibration.path))


def _name(path: Path | None) -> str | None:
    """The calibration file as the summary records it: beside the model's weights, so
    its folder and name say which (no machine's install path)."""
    return None if path is None else f"{path.parent.name}/{path.name}"


#: Re-judges a check from its recorded values (``scripts/calibrate_reliability.py``).
JUDGES = {
    "vegetation": check_vegetation,
    "confidence": check_confidence,
    "colour": check_colour,
}

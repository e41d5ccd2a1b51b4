"""A shipped model's calibration: what was measured about where it can be trusted.

Stored beside the model's weights, in ``calibration/NAME.json`` (the folder keeps it
apart from the models' own ``NAME.json``), and made by the scripts that measure it:

* ``scale``: from ``scripts/scale_sweep.py``, one generated field rendered at GSDs
  from 0.5 to 8 cm and segmented as it is and resampled: the input GSDs the model
  holds up at (``holds_from_m`` .. ``holds_to_m``), the ones where its scores fall
  apart (outside ``usable_from_m`` .. ``usable_to_m``), and what ``--resample auto``
  does (:class:`agriseg.scale.ScalePolicy`).
* ``checks``: from ``scripts/calibrate_reliability.py``, thresholds of the run's
  reliability checks (:mod:`agriseg.reliability`) set on held-out generated surveys
  and on real out-of-domain photos, and the rates they gave;
* ``checks_used``: which of those checks the verdict uses (the models without a
  network judge their own evidence, not the network checks: see
  ``scripts/calibrate_index_models.py``); ``scale.any_gsd``: the model does not
  depend on knowing the GSD (an unknown one is no reason to doubt it).

A model without a calibration (a checkpoint you trained) still gets a verdict, from
default thresholds, and the verdict says it is uncalibrated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agriseg.errors import ModelError
from agriseg.io.atomic import write_text_atomic
from agriseg.segmentation.scale import ScalePolicy

#: Folder beside the weights holding calibrations.
FOLDER = "calibration"


@dataclass(frozen=True)
class ScaleRange:
    """Input GSDs, in metres, where the model (with ``--resample auto``) was measured
    to hold up, and beyond which its scores fall apart."""

    holds_from_m: float
    holds_to_m: float
    usable_from_m: float
    usable_to_m: float


@dataclass(frozen=True)
class Calibration:
    """A model's measured scale behaviour and reliability thresholds.

    Attributes:
        path: The file it came from (None: defaults, uncalibrated).
        policy: What ``--resample auto`` does (None: the default tolerances).
        scale_range: Where the model holds up (None: unmeasured).
        checks: Thresholds per check (see :mod:`agriseg.reliability`).
        checks_used: The checks the verdict uses (empty: the default for the model).
        any_gsd: The model works without knowing the input's GSD.
        data: The whole file, for the record.
    """

    path: Path | None = None
    policy: ScalePolicy | None = None
    scale_range: ScaleRange | None = None
    checks: dict[str, dict[str, float]] = field(default_factory=dict)
    checks_used: tuple[str, ...] = ()
    any_gsd: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.path is not None


def _stem(weights: Path) -> str:
    name = weights.name
    for suffix in (".safetensors", ".onnx", ".json", ".int8"):
        name = name.removesuffix(suffix)
    return name


def calibration_path(weights: Path) -> Path:
    """Where the calibration of the model in ``weights`` lives."""
    return weights.parent / FOLDER / f"{_stem(weights)}.json"


def read_calibration(weights: Path) -> Calibration:
    """The calibration stored beside ``weights``; an empty one when there is none."""
    path = calibration_path(weights)
    if not path.is_file():
        return Calibration()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        scale = data.get("scale", {})
        policy = ScalePolicy(**scale["policy"]) if "policy" in scale else None
        ranges = ScaleRange(**scale["range"]) if "range" in scale else None
        checks = {k: dict(v) for k, v in data.get("checks", {}).items()}
        used = tuple(str(name) for name in data.get("checks_used", ()))
        any_gsd = bool(scale.get("any_gsd", False))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(
            f"{path}: unreadable model calibration ({exc}); remove it or rerun "
            "scripts/scale_sweep.py and scripts/calibrate_reliability.py"
        ) from None
    return Calibration(path, policy, ranges, checks, used, any_gsd, data)


def update_calibration(weights: Path, section: str, value: dict[str, Any] | list[str]) -> Path:
    """Replace ``section`` of the calibration beside ``weights`` (made if missing)."""
    path = calibration_path(weights)
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data["model"] = _stem(weights)
    data[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path

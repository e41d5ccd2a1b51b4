"""What a model is: its metadata (:class:`ModelMeta`) and how its input is normalised.

A checkpoint's ``NAME.json`` and an exported ONNX file's ``agriseg_meta`` hold a
:class:`ModelMeta`: architecture, encoder, classes, input bands and normalisation,
tile size, ground sampling distance, agriseg version. Where models are found and
loaded is :mod:`agriseg.models.registry`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agriseg.classes import DEFAULT_CLASSES, ClassList
from agriseg.errors import ModelError

#: Divisor that tile sizes must respect for these encoders (output stride).
SIZE_DIVISOR = 32

RGB_BANDS = ("red", "green", "blue")

#: Architectures of the models that run without a network (see
#: :mod:`agriseg.models.index_engine`): a shipped ``NAME.json`` without weights, its
#: classes computed from each tile's pixels.
INDEX_ARCHITECTURES = ("vegetation-index", "crop-rows")


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values become model input: ``(value / scale - mean) / std``.

    ``scale`` maps a dtype kind (``uint8``, ``uint16``, ``float``) to the value that
    means full brightness for that kind.
    """

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    scale: dict[str, float] = field(
        default_factory=lambda: {"uint8": 255.0, "uint16": 65535.0, "float": 1.0}
    )

    def scale_for(self, dtype: str) -> float:
        return self.scale[pixel_kind(dtype)]


PixelKind = Literal["uint8", "uint16", "float"]


def pixel_kind(dtype: str) -> PixelKind:
    """How a pixel type is scaled: ``uint8`` (0-255), ``uint16`` (any wider integer) or
    ``float`` (reflectance 0-1)."""
    if dtype == "uint8":
        return "uint8"
    if dtype in ("uint16", "int16", "uint32", "int32"):
        return "uint16"
    return "float"


#: Values of ``ModelMeta.vegetation_mask``: the network decides soil against plant
#: (``none``), or the vegetation index does (``index``, see
#: :mod:`agriseg.models.index_plants`).
VEGETATION_MASKS = ("none", "index")


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild and correctly feed a model."""

    name: str
    architecture: str
    encoder: str
    bands: tuple[str, ...] = RGB_BANDS
    classes: ClassList = DEFAULT_CLASSES
    normalization: Normalization = field(default_factory=Normalization)
    tile_size: int = 512
    gsd_m: float | None = 0.02
    pixel_kinds: tuple[PixelKind, ...] = ()
    arch_params: dict[str, Any] = field(default_factory=dict)
    agriseg_version: str = ""
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    vegetation_mask: str = "none"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["classes"] = self.classes.to_json()
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        data = dict(data)
        norm = data.pop("normalization", {})
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("bands", "pixel_kinds"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "classes" in kwargs:
            kwargs["classes"] = ClassList.from_json(kwargs["classes"], "model classes")
        if kwargs.get("vegetation_mask", "none") not in VEGETATION_MASKS:
            raise ValueError(
                f"vegetation_mask {kwargs['vegetation_mask']!r} is not one of "
                f"{', '.join(VEGETATION_MASKS)}"
            )
        return cls(
            normalization=Normalization(
                mean=tuple(norm.get("mean", Normalization().mean)),
                std=tuple(norm.get("std", Normalization().std)),
                scale=dict(norm.get("scale", Normalization().scale)),
            ),
            **kwargs,
        )


def read_meta(meta_path: Path) -> ModelMeta:
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{meta_path}: checkpoint metadata is missing; a checkpoint needs "
            "NAME.safetensors and NAME.json side by side"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable checkpoint metadata ({exc})") from None
    try:
        meta = ModelMeta.from_dict(data)
    except (TypeError, ValueError) as exc:  # InputError from the class list is a ValueError
        raise ModelError(f"{meta_path}: invalid checkpoint metadata ({exc})") from None
    return meta


def is_index_model(meta: ModelMeta) -> bool:
    """Whether ``meta`` is a model without a network (see :data:`INDEX_ARCHITECTURES`)."""
    return meta.architecture in INDEX_ARCHITECTURES

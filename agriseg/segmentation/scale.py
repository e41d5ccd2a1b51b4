"""Scale: the ground sampling distance (GSD) the model sees, and the tiles that give it.

A model learns objects at a size in pixels: weeds a few centimetres across are a
handful of pixels at the GSD it was trained at. When the input's GSD is far from the
model's, tiles are resampled on the fly to a GSD the model knows, and the class
probabilities brought back to the input grid before blending (see
:mod:`agriseg.segmentation.segment`), so the class raster stays on exactly the input's grid.

Tiling stays in *input* pixels: a model tile of ``M`` pixels covers ``M / factor``
input pixels, where ``factor = input GSD / GSD the model sees``. A survey finer than
needed therefore costs about ``factor²`` of the model's work at its own resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from agriseg.config import RunConfig
from agriseg.errors import InputError
from agriseg.io.areas import pixel_size_m
from agriseg.io.raster import RasterInfo
from agriseg.models.meta import SIZE_DIVISOR, ModelMeta
from agriseg.segmentation.tiling import TileGrid

Resample = Literal["auto", "off"]
RESAMPLE_MODES: tuple[Resample, ...] = ("auto", "off")

#: Inputs down to this many times finer than the model's GSD are used as they are;
#: finer ones are shrunk only to this limit. Shrinking less keeps more detail (a
#: 0.7 cm field shrunk to 1.2 / 1.5 / 2.0 / 2.9 cm scored mIoU 0.90 / 0.88 / 0.86 /
#: 0.81, scripts/gsd_benchmark.py) but saves less work; at 1.5x the default model's
#: 2.9 cm, a 2 cm survey is used as it is, and 0.7 cm costs a seventh of the forwards.
FINER_TOLERANCE = 1.5

#: Inputs up to this many times coarser than the model's GSD are used as they are;
#: coarser ones are enlarged to the model's GSD (a 5 cm field enlarged to 4.4 / 3.7 /
#: 2.9 cm scored 0.70 / 0.73 / 0.74, against 0.70 as it is).
COARSER_TOLERANCE = 1.2

#: Inputs coarser than this multiple of the model's GSD lack the detail the model
#: needs (a 5 cm weed is about one pixel): results are flagged as unreliable.
UNRELIABLE_COARSER = 3.0

#: Tiles are never enlarged more than this: enlarging adds no detail, only work.
MAX_UPSAMPLE = 4.0

#: Tiles are never shrunk more than this: an input tile holds factor⁻² times the
#: model tile's pixels, and a chunk's memory grows with it.
MAX_DOWNSAMPLE = 4.0


@dataclass(frozen=True)
class Scale:
    """How an input's GSD relates to the model's, and what the run does about it.

    Attributes:
        input_gsd_m: ground size of an input pixel; ``None`` when unknown.
        model_gsd_m: GSD the model was trained at; ``None`` when the model does not say.
        target_gsd_m: GSD the model sees (the input's when not resampled).
        resampled: whether tiles are resampled.
        unreliable: the input is far coarser than anything the model knows.
    """

    input_gsd_m: float | None
    model_gsd_m: float | None
    target_gsd_m: float | None
    resampled: bool
    unreliable: bool

    @property
    def factor(self) -> float:
        """Model pixels per input pixel along one axis: input GSD / GSD the model sees."""
        if not self.resampled or not self.input_gsd_m or not self.target_gsd_m:
            return 1.0
        return self.input_gsd_m / self.target_gsd_m

    def warnings(self) -> list[str]:
        """Warnings for the summary and the command line."""
        if not self.unreliable or not self.input_gsd_m or not self.model_gsd_m:
            return []
        return [
            f"the input's ground sampling distance ({format_gsd(self.input_gsd_m)}) is "
            f"{self.input_gsd_m / self.model_gsd_m:,.1f}x coarser than the model's "
            f"({format_gsd(self.model_gsd_m)}): plants and weeds are too few pixels to "
            "recognise, so classes and health figures are unreliable at this scale; "
            "use imagery flown lower or a model trained at this GSD"
        ]


@dataclass(frozen=True)
class ScalePolicy:
    """What ``--resample auto`` does with a model: the input GSDs it uses as they are,
    and the GSD it resamples inputs outside them to.

    A shipped model's policy is measured (``scripts/scale_sweep.py``, stored in its
    calibration, see :mod:`agriseg.calibration`); other models get
    :meth:`around` their training GSD.

    Attributes:
        finest_m: Inputs from this GSD...
        coarsest_m: ...to this one are used as they are.
        finer_target_m: GSD finer inputs are shrunk to (by at most :data:`MAX_DOWNSAMPLE`).
        coarser_target_m: Finest GSD coarser inputs are enlarged to...
        coarser_factor: ...enlarging them this many times (at most :data:`MAX_UPSAMPLE`).
    """

    finest_m: float
    coarsest_m: float
    finer_target_m: float
    coarser_target_m: float
    coarser_factor: float = MAX_UPSAMPLE

    @classmethod
    def around(cls, model_gsd_m: float) -> ScalePolicy:
        """The unmeasured policy: the tolerances around the model's training GSD."""
        finest = model_gsd_m / FINER_TOLERANCE
        return cls(finest, model_gsd_m * COARSER_TOLERANCE, finest, model_gsd_m)

    def target(self, input_gsd_m: float) -> float:
        """The GSD the model sees for an input of ``input_gsd_m`` under ``auto``."""
        if input_gsd_m < self.finest_m:
            return min(self.finer_target_m, input_gsd_m * MAX_DOWNSAMPLE)
        if input_gsd_m > self.coarsest_m:
            factor = min(self.coarser_factor, MAX_UPSAMPLE)
            return max(self.coarser_target_m, input_gsd_m / factor)
        return input_gsd_m


def _explicit_target(input_gsd_m: float, target_m: float) -> float:
    """An explicit target GSD, kept within the resampling limits."""
    return min(max(target_m, input_gsd_m / MAX_UPSAMPLE), input_gsd_m * MAX_DOWNSAMPLE)


def format_gsd(metres: float) -> str:
    """A ground sampling distance for people: cm below a metre, then m, then km."""
    if metres < 1:
        return f"{100 * metres:.1f} cm"
    if metres < 1000:
        return f"{metres:.1f} m"
    return f"{metres / 1000:,.1f} km"


def decide_scale(
    input_gsd_m: float | None,
    model_gsd_m: float | None,
    resample: Resample | float = "auto",
    policy: ScalePolicy | None = None,
) -> Scale:
    """Decide the GSD the model sees.

    With ``auto``, inputs inside ``policy``'s range are used as they are and others
    resampled to its targets (:meth:`ScalePolicy.target`; without a measured policy,
    :meth:`ScalePolicy.around` the model's GSD: inputs more than
    :data:`FINER_TOLERANCE` times finer are shrunk to that limit, ones more than
    :data:`COARSER_TOLERANCE` times coarser enlarged to the model's GSD). A number is
    a target GSD in metres (within the resampling limits). Nothing is resampled with
    ``off``, or when either GSD is unknown (models trained on plain images may not
    know theirs: ``gsd_m`` ``None`` or 0).
    """
    if not isinstance(resample, float) and resample not in RESAMPLE_MODES:
        raise InputError(
            f"--resample {resample!r} is not one of {', '.join(RESAMPLE_MODES)} "
            "or a ground sampling distance in metres"
        )
    for name, value, least in (
        ("input", input_gsd_m, 0.0),
        ("model", model_gsd_m, -1.0),
        ("target", resample if isinstance(resample, float) else None, 0.0),
    ):
        # A model's 0 means "unknown"; an input's must be real.
        if value is not None and not (math.isfinite(value) and value > least):
            raise InputError(
                f"{name} ground sampling distance {value!r} m must be a positive number; "
                "check --gsd, --resample or the model's gsd_m"
            )
    if not input_gsd_m or not model_gsd_m:
        return Scale(input_gsd_m or None, model_gsd_m or None, input_gsd_m or None, False, False)
    unreliable = input_gsd_m > UNRELIABLE_COARSER * model_gsd_m
    if isinstance(resample, float):
        target = _explicit_target(input_gsd_m, resample)
    elif resample == "off":
        target = input_gsd_m
    else:
        target = (policy or ScalePolicy.around(model_gsd_m)).target(input_gsd_m)
    # Targets within half a percent of the input are no resampling worth the work.
    resampled = abs(target / input_gsd_m - 1) > 0.005
    return Scale(
        input_gsd_m, model_gsd_m, target if resampled else input_gsd_m, resampled, unreliable
    )


def raster_gsd_m(info: RasterInfo, override_m: float | None = None) -> float | None:
    """Ground size of the raster's centre pixel in metres (``override_m`` when given).

    ``None`` for a plain image (no CRS) without ``override_m``: its scale is unknown.
    """
    if override_m is not None:
        return override_m
    if info.crs is None:
        return None
    return pixel_size_m(info.crs, info.transform, info.width, info.height)


def _even(value: float) -> int:
    return 2 * round(value / 2)


def tile_grid(
    height: int,
    width: int,
    scale: Scale,
    model_tile: int,
    overlap: int,
    tiles_per_chunk: int,
) -> TileGrid:
    """The input-pixel tile grid whose tiles become ``model_tile``-pixel model tiles.

    ``model_tile`` and ``overlap`` are in model pixels. Unresampled, this is the plain
    grid (tile size a multiple of the model's divisor). Resampled, the input tile is
    ``model_tile / factor`` rounded to an even number and the overlap scaled alike;
    only the model-side size must be a multiple of the divisor.
    """
    if not scale.resampled:
        return TileGrid(height, width, model_tile, overlap, tiles_per_chunk)
    # Validate the options in the units the user gave them.
    TileGrid(model_tile, model_tile, model_tile, overlap, tiles_per_chunk)
    tile = max(SIZE_DIVISOR, _even(model_tile / scale.factor))
    input_overlap = min(_even(overlap * tile / model_tile), tile // 2 // 2 * 2)
    return TileGrid(height, width, tile, input_overlap, tiles_per_chunk, divisor=2)


@dataclass(frozen=True)
class TilePlan:
    """A run's scale decision and the input-pixel tile grid that carries it out."""

    scale: Scale
    grid: TileGrid
    model_tile: int

    @property
    def resize_to(self) -> int | None:
        """Edge the model sees tiles at, when it differs from the input tile."""
        return self.model_tile if self.model_tile != self.grid.tile else None

    def summary(self) -> dict[str, Any]:
        """The ``scale`` section of a run's summary."""

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(float(value), 6)

        return {
            "input_gsd_m": rounded(self.scale.input_gsd_m),
            "model_gsd_m": rounded(self.scale.model_gsd_m),
            "target_gsd_m": rounded(self.scale.target_gsd_m),
            # The factor applied: tile edges are whole pixels.
            "factor": rounded(self.model_tile / self.grid.tile),
            "resampled": self.scale.resampled,
            "unreliable": self.scale.unreliable,
            "model_tile_px": self.model_tile,
            "input_tile_px": self.grid.tile,
        }


def plan_tiles(
    info: RasterInfo, meta: ModelMeta, config: RunConfig, policy: ScalePolicy | None = None
) -> TilePlan:
    """Decide the scale of a run on ``info`` with ``meta``'s model (``auto`` following
    ``policy``, see :func:`decide_scale`), and its tile grid."""
    scale = decide_scale(
        raster_gsd_m(info, config.gsd_m), meta.gsd_m or None, config.resample, policy
    )
    model_tile = config.tile_size or meta.tile_size
    grid = tile_grid(info.height, info.width, scale, model_tile, config.overlap, config.batch_size)
    return TilePlan(scale, grid, model_tile)

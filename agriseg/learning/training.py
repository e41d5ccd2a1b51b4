"""Training and fine-tuning segmentation models on labelled orthomosaics.

With many training images (:data:`HOLD_OUT_IMAGES_FROM`), a seeded share of whole
images is held out for validation (:func:`held_out_images`). With fewer, each image
(a :class:`Scene`) is cut into square blocks; a seeded share of whole blocks is held
out, and training chips never come within ``gap`` pixels of them, so neighbouring
chips cannot leak into the validation score. Chips are centred on pixels of a
randomly chosen class (class balancing), then flipped, rotated, colour- and
scale-jittered (robustness to lighting and ground sampling distance). Unlabelled
pixels (255) are ignored by the loss.

The classes come from the labels: a model predicts exactly the classes its labels
mark (see :func:`load_training_set`). Labels may be sparse: only the pixels a mask
or polygon labels are learnt from and scored, validation blocks are drawn among
blocks holding labels, and vector labels on a large survey read only the part of
the image around the polygons.

After every epoch the training state (``model.state.pt``: weights, optimiser,
schedule, epoch, random states) and the checkpoint
(``OUT/model.safetensors`` + ``model.json``, or ``NAME.safetensors`` + ``NAME.json``)
are written, so an interrupted run leaves a usable model and can resume. With
:attr:`TrainConfig.patience`, training stops early when validation stops improving
and the checkpoint keeps the best epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from agriseg import __version__
from agriseg.classes import DEFAULT_CLASSES, NODATA, ClassList, Colour
from agriseg.errors import InputError, ModelError
from agriseg.io.raster import open_raster, pixel_grid_ok, read_window
from agriseg.io.spectral import new_model_bands
from agriseg.learning.labels import Labels, label_classes
from agriseg.learning.metrics import Scores, confusion_matrix, scores
from agriseg.models.architectures import (
    build_model,
    check_architecture,
    default_encoder,
    with_classes,
)
from agriseg.models.inference import normalize, resolve_device
from agriseg.models.meta import RGB_BANDS, SIZE_DIVISOR, ModelMeta, Normalization, pixel_kind
from agriseg.models.registry import (
    CHECKPOINT_SUFFIX,
    find_model,
    load_model,
    model_name,
    output_checkpoint,
    save_checkpoint,
)
from agriseg.segmentation.scale import raster_gsd_m

#: Called as ``progress(steps_done, steps_total)``.
Progress = Callable[[int, int], None]

#: Arithmetic of the training steps (see :attr:`TrainConfig.precision`).
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")

#: Pixels of each class remembered per scene as chip centres.
_CENTRES_PER_CLASS = 20_000


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        architecture: Registry key (``unet``, ``pspnet``...); ``None``: ``unet``, or
            the architecture of ``init``.
        encoder: segmentation-models-pytorch encoder; ``None``: ``init``'s, else the
            architecture's default (``mobilenet_v2``; SegNet has its own).
        arch_params: Extra keyword arguments of the architecture (new models only).
        init: Shipped model name or checkpoint to start from (fine-tuning).
        classes: The classes to predict; ``None``: ``init``'s, else
            :data:`~agriseg.classes.DEFAULT_CLASSES` (:func:`train_files` derives
            them from the labels instead, see :func:`~agriseg.learning.labels.label_classes`).
            Classes other than ``init``'s give it a new segmentation head.
        label_colors: Class name → colour of colour-coded (RGB) masks.
        gsd_m: Ground sampling distance of the images in metres; ``None``: from
            their georeferencing (plain images: unknown).
        chip_size: Edge of the training chips in pixels (a multiple of 32).
        chips_per_step: Chips per optimiser step (the training batch).
        epochs: Number of epochs.
        steps_per_epoch: Optimiser steps per epoch.
        learning_rate: Peak AdamW learning rate (linear warm-up, cosine decay).
        weight_decay: AdamW weight decay.
        val_fraction: Share of each image's blocks held out for validation (0: none).
        val_block: Edge of the validation blocks in pixels; ``None``: ``chip_size``.
        gap: Pixels around validation blocks that chips may not touch; ``None``:
            ``chip_size // 4``.
        scale_jitter: Range of the factor a chip is resampled by (GSD robustness;
            wider ranges shrink thin leaves and grass further: 0.8-1.25 beat 0.7-1.4
            on real photos within a 5-minute budget).
        colour_jitter: Strength of brightness, per-band gain and contrast jitter.
        balance: Probability a chip is centred on a randomly chosen class rather
            than a random pixel.
        bands: 1-based band indexes to train on; ``None``: ``init``'s bands, else
            every non-alpha band.
        band_names: Names of the trained bands (new models only); ``None``: the
            first raster's names (:func:`agriseg.io.spectral.band_names`).
        label_column: Attribute of vector labels holding the class name or id.
        label_layer: Layer of vector label files holding the polygons; ``None``: the
            only polygon layer.
        tile_size: Tile edge recorded for inference.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: Arithmetic of the training steps: ``bf16`` (bfloat16 autocast,
            weights kept in float32), ``fp32``, or ``auto``: ``bf16`` on a CPU with
            bfloat16 instructions (AVX-512 BF16 or AMX: about twice the steps per
            minute), else ``fp32``. Validation always runs in float32.
        seed: Seed of every random choice.
        patience: Early stopping: epochs in a row without a better validation mIoU
            after which training stops, the checkpoint then holding the weights of
            the best epoch (0: never; the checkpoint holds the last epoch). Off by
            default: the learning rate decays to the end of the plan, and the
            noisy epochs at a high rate stopped a 20-minute peanut fine-tune after
            10 minutes.
        resume: Continue from ``NAME.state.pt`` beside the output checkpoint.
        vegetation_mask: ``index``: the model leaves soil and plant to the vegetation
            index and tells the plants apart (see :mod:`agriseg.models.index_plants`;
            what ``--labels rows`` trains); ``None``: ``init``'s, else ``none``.
        keep_classes: Keep ``init``'s classes that no label marks (self-training on
            row labels, which know soil, crop and weed only, keeps a disease class).
        description: Written into the checkpoint metadata.
        command: The command that trained the model, recorded in the metadata.
    """

    architecture: str | None = None
    encoder: str | None = None
    arch_params: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    classes: ClassList | None = None
    label_colors: dict[str, Colour] = field(default_factory=dict)
    gsd_m: float | None = None
    chip_size: int = 256
    chips_per_step: int = 8
    epochs: int = 10
    steps_per_epoch: int = 100
    minutes: float | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    val_block: int | None = None
    gap: int | None = None
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    colour_jitter: float = 0.15
    balance: float = 0.8
    bands: tuple[int, ...] | None = None
    band_names: tuple[str, ...] | None = None
    label_column: str = "class"
    label_layer: str | None = None
    tile_size: int = 512
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    patience: int = 0
    resume: bool = False
    vegetation_mask: str | None = None
    keep_classes: bool = False
    description: str = ""
    command: str = ""

    def check(self) -> None:
        """Raise :class:`InputError` naming the first unusable option."""
        if self.chip_size < SIZE_DIVISOR or self.chip_size % SIZE_DIVISOR:
            raise InputError(
                f"chip size {self.chip_size} must be a positive multiple of {SIZE_DIVISOR}"
            )
        if self.tile_size % SIZE_DIVISOR:
            raise InputError(f"tile size {self.tile_size} must be a multiple of {SIZE_DIVISOR}")
        if self.patience < 0:
            raise InputError(f"--patience {self.patience} must be 0 (never stop early) or more")
        for name in ("chips_per_step", "epochs", "steps_per_epoch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} {getattr(self, name)} must be at least 1")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"--minutes {self.minutes} must be a time in minutes > 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"validation fraction {self.val_fraction} must be in [0, 1)")
        lo, hi = self.scale_jitter
        if not 0 < lo <= hi:
            raise InputError(f"scale jitter {self.scale_jitter} must satisfy 0 < low <= high")
        if self.precision not in TRAIN_PRECISIONS:
            raise InputError(
                f"training precision {self.precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}"
            )
        if self.learning_rate <= 0:
            raise InputError(f"learning rate {self.learning_rate} must be > 0")
        if self.gsd_m is not None and not self.gsd_m > 0:
            raise InputError(f"--gsd {self.gsd_m} must be a ground distance in metres > 0")
        if self.band_names is not None and self.init is not None:
            raise InputError(
                f"--band-names {','.join(self.band_names)} names a new model's bands but "
                f"--from {self.init} keeps the bands of that model; drop --band-names"
            )


@dataclass(frozen=True)
class Scene:
    """One labelled training image held in memory.

    Attributes:
        image: ``(bands, H, W)`` float32 raw pixel values, NaN where invalid.
        labels: ``(H, W)`` uint8 class ids, 255 where unlabelled.
        dtype: The source pixel type (selects the normalisation scale).
        gsd_m: Ground sampling distance in metres; ``None``: unknown (plain image).
        name: Where it came from, for messages and metadata.
    """

    image: np.ndarray
    labels: np.ndarray
    dtype: str
    gsd_m: float | None
    name: str


@dataclass(frozen=True)
class EpochResult:
    """What one epoch achieved; ``validation`` is ``None`` without held-out blocks."""

    epoch: int
    epochs: int
    loss: float
    validation: Scores | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": round(self.loss, 5),
            "seconds": round(self.seconds, 1),
        }
        if self.validation is not None:
            v = self.validation.to_dict()
            out["val_miou"] = v["miou"]
            out["val_iou"] = {k: c["iou"] for k, c in v["classes"].items()}
            out["val_f1"] = {k: c["f1"] for k, c in v["classes"].items()}
        return out


@dataclass(frozen=True)
class TrainResult:
    """The checkpoint written, the per-epoch history and what the user should know
    (classes left out)."""

    weights: Path
    meta: ModelMeta
    history: tuple[EpochResult, ...]
    warnings: tuple[str, ...] = ()
    best_epoch: int | None = None
    stopped_early: bool = False


@dataclass(frozen=True)
class TrainingSet:
    """Labelled scenes ready to train on, and the classes their labels mark.

    Attributes:
        scenes: The images and their labels, as ids of ``classes``.
        classes: Exactly the classes some label marks.
        band_names: The bands the model reads.
        warnings: Classes left out because no label marks them.
    """

    scenes: tuple[Scene, ...]
    classes: ClassList
    band_names: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def state_path(out: Path) -> Path:
    """Where the resumable training state of training output ``out`` lives (a model
    folder or a ``.safetensors`` file, see :func:`~agriseg.models.output_checkpoint`)."""
    weights = output_checkpoint(out)
    return weights.with_name(weights.name.removesuffix(CHECKPOINT_SUFFIX) + ".state.pt")


def load_scene(
    raster: Path,
    labels: Path,
    wanted: tuple[str, ...],
    config: TrainConfig,
    classes: ClassList = DEFAULT_CLASSES,
) -> Scene:
    """Read a training image and its labels (class raster, mask or vector file) into memory.

    The image may be a plain photo (no georeferencing) with a mask of the same size;
    its ground sampling distance is then ``config.gsd_m`` (or unknown). With vector
    labels only the part of the image around the polygons (and a chip's width
    beyond) is read: a few polygons on a large survey need little memory.
    """
    info = open_raster(raster, wanted, config.bands)
    truth_source = Labels(labels, info.grid, classes, config.label_column, config.label_layer,
                          colors=config.label_colors)  # fmt: skip
    window = truth_source.labelled_window(margin=config.chip_size)
    if window is None:
        raise InputError(
            f"{labels}: no labelled pixel falls on {raster}; check that both cover the same area"
        )
    image = read_window(info.path, info.bands, window, info.crs is None)
    truth = truth_source.read(window)
    truth[np.isnan(image).any(axis=0)] = NODATA
    if not (truth != NODATA).any():
        raise InputError(
            f"{labels}: no labelled pixel falls on {raster}; check that both cover the same area"
        )
    return Scene(image, truth, info.dtype, raster_gsd_m(info, config.gsd_m), str(raster))


def _fit_normalization(scenes: Sequence[Scene]) -> Normalization:
    """Per-band mean and standard deviation of the scaled training pixels."""
    base = Normalization()
    sums: np.ndarray | None = None
    squares: np.ndarray | None = None
    count = 0
    for scene in scenes:
        data = scene.image[:, ::4, ::4].reshape(scene.image.shape[0], -1)
        data = data[:, ~np.isnan(data).any(axis=0)] / base.scale_for(scene.dtype)
        sums = data.sum(axis=1) if sums is None else sums + data.sum(axis=1)
        sq = (data.astype("float64") ** 2).sum(axis=1)
        squares = sq if squares is None else squares + sq
        count += data.shape[1]
    assert sums is not None and squares is not None
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-8))
    return Normalization(
        mean=tuple(round(float(m), 5) for m in mean),
        std=tuple(round(float(s), 5) for s in std),
        scale=dict(base.scale),
    )


#: From this many training images on, validation holds out whole images rather
#: than blocks of every image.
HOLD_OUT_IMAGES_FROM = 8

#: Most labelled pixels held out for validation when whole images are: validation
#: runs after every epoch, and every pixel held out is one the model does not learn.
VALIDATION_PIXELS = 4_000_000


def held_out_images(
    scenes: Sequence[Scene], config: TrainConfig, rng: np.random.Generator
) -> set[int]:
    """Indexes of the scenes held out whole for validation (empty: blocks of each).

    With many images (photos, or many small surveys) whole images are held out:
    ``val_fraction`` of them, at most :data:`VALIDATION_PIXELS` labelled pixels, at
    least one. Blocks cut out of every image would leave chips few places to fit
    (a chip may not touch a block or its gap) and score pixels that sit beside
    trained ones. With fewer images, blocks of each are held out (see :class:`_Split`).
    """
    if config.val_fraction == 0 or len(scenes) < HOLD_OUT_IMAGES_FROM:
        return set()
    wanted = max(1, round(config.val_fraction * len(scenes)))
    chosen: set[int] = set()
    pixels = 0
    for index in rng.permutation(len(scenes)):
        labelled = int((scenes[index].labels != NODATA).sum())
        if chosen and (len(chosen) >= wanted or pixels + labelled > VALIDATION_PIXELS):
            break
        if labelled:
            chosen.add(int(index))
            pixels += labelled
    return chosen


class _Split:
    """One scene's held-out blocks and the chip positions allowed for training."""

    def __init__(
        self,
        scene: Scene,
        config: TrainConfig,
        rng: np.random.Generator,
        held_out: bool | None = None,
    ) -> None:
        """``held_out``: True holds the whole scene out, False none of it, None blocks."""
        h, w = scene.labels.shape
        block = config.val_block or config.chip_size
        gap = config.chip_size // 4 if config.gap is None else config.gap
        if held_out is not None:
            starts = [(0, 0)] if held_out else []
            block = max(h, w)
            n_val = len(starts)
        else:
            # Validation blocks are drawn among blocks holding labels: with sparse
            # labels most blocks hold none and would score nothing.
            starts = [
                (r, c)
                for r in range(0, h, block)
                for c in range(0, w, block)
                if (scene.labels[r : r + block, c : c + block] != NODATA).any()
            ]
            n_val = round(config.val_fraction * len(starts))
            if config.val_fraction > 0:
                n_val = max(1, n_val)
            if n_val and n_val >= len(starts):
                raise InputError(
                    f"{scene.name}: {h}x{w} px gives {len(starts)} labelled block(s) of "
                    f"{block} px, too few to hold any out; use a smaller --val-block or "
                    "--val-fraction 0"
                )
        chosen: list[int] = (
            sorted(int(i) for i in rng.choice(len(starts), size=n_val, replace=False))
            if n_val
            else []
        )
        self.val_windows = [
            Window(c, r, min(block, w - c), min(block, h - r))
            for r, c in (starts[i] for i in chosen)
        ]
        blocked = np.zeros((h, w), dtype=bool)
        for win in self.val_windows:
            r0, c0 = int(win.row_off), int(win.col_off)
            r1, c1 = r0 + int(win.height), c0 + int(win.width)
            blocked[max(r0 - gap, 0) : r1 + gap, max(c0 - gap, 0) : c1 + gap] = True
        labelled = (scene.labels != NODATA) & ~blocked
        # Integral images of blocked and of labelled training pixels: a chip is allowed
        # when it covers no blocked pixel and some labelled one (an unlabelled chip
        # would teach nothing).
        self._integral = np.pad(blocked.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self._labelled = np.pad(labelled.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.centres: list[np.ndarray] = []
        labelled_ids = scene.labels[scene.labels != NODATA]
        for k in range(int(labelled_ids.max()) + 1 if labelled_ids.size else 0):
            flat = np.flatnonzero(labelled & (scene.labels == k))
            if flat.size > _CENTRES_PER_CLASS:
                flat = rng.choice(flat, _CENTRES_PER_CLASS, replace=False)
            self.centres.append(flat)
        self.shape = (h, w)
        self.train_pixels = int(labelled.sum())

    def allowed(self, row: int, col: int, size: int) -> bool:
        def inside(i: np.ndarray) -> int:
            return int(
                i[row + size, col + size] - i[row, col + size] - i[row + size, col] + i[row, col]
            )

        return inside(self._integral) == 0 and inside(self._labelled) > 0

    def any_allowed(self, size: int) -> bool:
        def sums(i: np.ndarray) -> np.ndarray:
            return i[size:, size:] - i[:-size, size:] - i[size:, :-size] + i[:-size, :-size]

        return bool(((sums(self._integral) == 0) & (sums(self._labelled) > 0)).any())


class ChipSampler:
    """Class-balanced, augmented training chips from the training part of each scene."""

    def __init__(
        self,
        scenes: Sequence[Scene],
        splits: Sequence[_Split],
        norm: Normalization,
        config: TrainConfig,
    ) -> None:
        self.scenes = scenes
        self.splits = splits
        self.norm = norm
        self.config = config
        weights = np.array([s.train_pixels for s in splits], dtype="float64")
        if weights.sum() == 0:
            raise InputError("no labelled training pixel is left outside the validation blocks")
        self.scene_weights = weights / weights.sum()
        for scene, split in zip(scenes, splits, strict=True):
            smallest = min(round(config.chip_size * config.scale_jitter[0]), *split.shape)
            if split.train_pixels and not split.any_allowed(smallest):
                raise InputError(
                    f"{scene.name}: no {smallest} px chip fits outside the validation blocks "
                    f"and their {config.gap if config.gap is not None else config.chip_size // 4}"
                    " px gap; use a smaller --chip-size, --val-fraction 0 or a larger image"
                )

    def _position(
        self, rng: np.random.Generator, split: _Split, size: int
    ) -> tuple[int, int] | None:
        h, w = split.shape
        present = [k for k, centres in enumerate(split.centres) if centres.size]
        for _ in range(30):
            if present and rng.random() < self.config.balance:
                centres = split.centres[present[rng.integers(len(present))]]
                flat = int(centres[rng.integers(centres.size)])
                r, c = divmod(flat, w)
                row = int(np.clip(r - rng.integers(size), 0, h - size))
                col = int(np.clip(c - rng.integers(size), 0, w - size))
            else:
                row, col = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            if split.allowed(row, col, size):
                return row, col
        return None

    def chip(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One normalised chip ``(bands, S, S)`` float32 and its labels ``(S, S)`` int64."""
        cfg = self.config
        lo, hi = cfg.scale_jitter
        while True:
            index = int(rng.choice(len(self.scenes), p=self.scene_weights))
            scene, split = self.scenes[index], self.splits[index]
            scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            size = min(round(cfg.chip_size * scale), *split.shape)
            pos = self._position(rng, split, size)
            if pos is not None:
                break
        row, col = pos
        image = scene.image[:, row : row + size, col : col + size]
        labels = scene.labels[row : row + size, col : col + size]
        # Colour jitter on raw values: brightness, per-band gain, contrast.
        j = cfg.colour_jitter
        bands = image.shape[0]
        gain = rng.uniform(1 - j, 1 + j) * rng.uniform(1 - j / 3, 1 + j / 3, bands)
        image = image * np.asarray(gain, dtype="float32")[:, None, None]
        mean = np.nanmean(image, axis=(1, 2), keepdims=True)
        image = mean + np.float32(rng.uniform(1 - j, 1 + j)) * (image - mean)
        x = torch.from_numpy(normalize(image, scene.dtype, self.norm))
        y = torch.from_numpy(labels.astype("int64"))
        if size != cfg.chip_size:
            x = F.interpolate(
                x[None], size=(cfg.chip_size,) * 2, mode="bilinear", align_corners=False
            )[0]
            y = F.interpolate(y[None, None].float(), size=(cfg.chip_size,) * 2, mode="nearest")[
                0, 0
            ].long()
        k = int(rng.integers(4))
        x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (0, 1))
        if rng.random() < 0.5:
            x, y = x.flip(2), y.flip(1)
        return x.numpy(), y.numpy()

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chips = [self.chip(rng) for _ in range(self.config.chips_per_step)]
        x = torch.from_numpy(np.stack([c[0] for c in chips]))
        y = torch.from_numpy(np.stack([c[1] for c in chips]))
        return x, y


def predict_classes(model: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Class ids ``(H, W)`` of one normalised image, padded to the encoder's stride."""
    _, h, w = image.shape
    ph, pw = -h % SIZE_DIVISOR, -w % SIZE_DIVISOR
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with torch.inference_mode():
        logits = model(x)
    return logits[0, :, :h, :w].argmax(0).cpu().numpy()


def validate(
    model: torch.nn.Module,
    scenes: Sequence[Scene],
    splits: Sequence[_Split],
    norm: Normalization,
    device: torch.device,
    classes: ClassList = DEFAULT_CLASSES,
) -> Scores | None:
    """Scores of ``model`` on every held-out block; ``None`` when nothing is held out."""
    if not any(split.val_windows for split in splits):
        return None
    was_training = model.training
    model.eval()
    n = len(classes)
    cm = np.zeros((n, n), dtype="int64")
    for scene, split in zip(scenes, splits, strict=True):
        for win in split.val_windows:
            rows, cols = win.toslices()
            image = normalize(scene.image[:, rows, cols], scene.dtype, norm)
            cm += confusion_matrix(
                scene.labels[rows, cols], predict_classes(model, image, device), n
            )
    model.train(was_training)
    return scores(cm, classes)


def _schedule(plan: _StepPlan) -> Callable[[int], float]:
    """Warm-up, then a cosine decay that ends with the plan's last step (the plan may
    shorten while training runs, under a time budget)."""

    def factor(step: int) -> float:
        total = plan.total
        warmup = max(1, total // 30)
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


#: Share of a time budget kept back, before the first validation is timed, for the
#: validations and checkpoints after each epoch.
VALIDATION_RESERVE = 0.1


@dataclass
class _StepPlan:
    """How many optimiser steps the training runs: ``epochs × steps`` or, with a time
    budget, as many as fit in it, re-estimated from the steps' own pace as they run.

    Attributes:
        total: Steps planned (at most ``limit``).
        limit: ``epochs × steps per epoch``.
        budget_s: The time budget in seconds (None: none).
        started: When training started (``time.perf_counter()``).
        step_s: Seconds of the steps run so far, and their count.
        validation_s: Seconds of the latest validation and checkpoint (None: none yet).
    """

    total: int
    limit: int
    budget_s: float | None = None
    started: float = 0.0
    step_s: float = 0.0
    steps_timed: int = 0
    validation_s: float | None = None

    def after_step(self, done: int, seconds: float) -> None:
        """Record one step of ``seconds``; ``done`` steps are done in all."""
        self.step_s += seconds
        self.steps_timed += 1
        if self.budget_s is None or self.steps_timed < 3:
            return
        elapsed = time.perf_counter() - self.started
        per_step = self.step_s / self.steps_timed
        if self.validation_s is None:
            reserve = VALIDATION_RESERVE * self.budget_s
        else:  # one validation per epoch still to come, the last one included
            reserve = self.validation_s
        fit = done + int(max(0.0, self.budget_s - elapsed - reserve) / per_step)
        self.total = max(done, min(self.limit, fit))


def _model_and_meta(
    scenes: Sequence[Scene], band_names: tuple[str, ...], name: str, config: TrainConfig
) -> tuple[torch.nn.Module, ModelMeta]:
    if config.init is not None:
        model, base = load_model(config.init)
        if len(base.bands) != scenes[0].image.shape[0]:
            raise InputError(
                f"--from {config.init}: the model takes {len(base.bands)} band(s) "
                f"({', '.join(base.bands)}) but the training images give "
                f"{scenes[0].image.shape[0]}; select bands with --bands"
            )
        for option, value in (("architecture", config.architecture), ("encoder", config.encoder)):
            if value is not None and value != getattr(base, option):
                raise ModelError(
                    f"--from {config.init} is a {getattr(base, option)} {option}, not {value}; "
                    "drop the option or train from scratch"
                )
        mask = config.vegetation_mask or base.vegetation_mask
        meta = dataclasses.replace(
            base, name=name, tile_size=config.tile_size, vegetation_mask=mask
        )
        if config.classes is not None:
            model, meta = with_classes(model, meta, config.classes)
        return model.train(), meta
    architecture = config.architecture or "unet"
    check_architecture(architecture)
    meta = ModelMeta(
        name=name,
        architecture=architecture,
        encoder=config.encoder or default_encoder(architecture),
        bands=band_names,
        normalization=_fit_normalization(scenes),
        tile_size=config.tile_size,
        arch_params=dict(config.arch_params),
        classes=config.classes or DEFAULT_CLASSES,
        vegetation_mask=config.vegetation_mask or "none",
    )
    try:
        model = build_model(meta)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(
            f"cannot build {architecture} with encoder {meta.encoder!r} ({exc}); "
            "see segmentation-models-pytorch for valid encoder names"
        ) from None
    return model.train(), meta


def bf16_steps(precision: str, device: torch.device) -> bool:
    """Whether training steps run under bfloat16 autocast (see
    :attr:`TrainConfig.precision`): ``auto`` chooses it on CPUs with bfloat16
    instructions only; on CUDA, ``auto`` keeps float32."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _train_epoch(
    model: torch.nn.Module,
    sampler: ChipSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    device: torch.device,
    steps: int,
    plan: _StepPlan,
    progress: Progress | None = None,
    steps_before: int = 0,
    bf16: bool = False,
) -> float:
    """Run up to ``steps`` optimiser steps on sampled chips, stopping early when the
    ``plan`` ends; return the mean loss.

    The loss is cross-entropy plus Dice, both ignoring unlabelled pixels (255), in
    float32; with ``bf16`` the forward pass runs under bfloat16 autocast. Chips are
    channels-last, as the model is (faster convolutions on CPU).
    ``progress`` is called with the steps done in the whole training (``steps_before``
    plus this epoch's) and the steps planned.
    """
    dice = smp.losses.DiceLoss("multiclass", ignore_index=NODATA)
    model.train()
    losses = []
    for step in range(steps):
        if steps_before + step >= plan.total:
            break
        start = time.perf_counter()
        x, y = sampler.batch(rng)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, ignore_index=NODATA) + dice(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # The plan first, so the rate of the next step follows a plan that just shrank.
        plan.after_step(steps_before + step + 1, time.perf_counter() - start)
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(steps_before + step + 1, plan.total)
    return float(np.mean(losses))


def _check_scenes(scenes: Sequence[Scene]) -> None:
    if not scenes:
        raise InputError("no training images given")
    counts = {s.image.shape[0] for s in scenes}
    if len(counts) > 1:
        raise InputError(f"training images have different band counts {sorted(counts)}")


def train(
    scenes: Sequence[Scene],
    out: Path,
    config: TrainConfig,
    band_names: tuple[str, ...] = RGB_BANDS,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model on in-memory scenes and write checkpoint ``out``.

    Args:
        scenes: Labelled images, all with the same number of bands.
        out: A model folder (``OUT/model.safetensors``) or a ``NAME.safetensors`` file.
        config: Training options.
        band_names: Names of the input bands of a new model (ignored when fine-tuning).
        progress: Called after every step with (steps done, steps in total).
        on_epoch: Called after every epoch with its loss and validation scores.

    Returns:
        The checkpoint written after the last epoch and the history of all epochs.
    """
    config.check()
    _check_scenes(scenes)
    device = resolve_device(config.device)
    weights_path = output_checkpoint(out)
    name = model_name(weights_path)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    whole = held_out_images(scenes, config, rng)
    splits = [
        _Split(scene, config, rng, (k in whole) if whole else None)
        for k, scene in enumerate(scenes)
    ]
    model, meta = _model_and_meta(scenes, band_names, name, config)
    _check_label_ids(scenes, meta.classes)
    sampler = ChipSampler(scenes, splits, meta.normalization, config)
    model.to(device)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    bf16 = bf16_steps(config.precision, device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    limit = config.epochs * config.steps_per_epoch
    plan = _StepPlan(limit, limit, None if config.minutes is None else 60 * config.minutes)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(plan))
    history: list[EpochResult] = []
    records: list[dict[str, Any]] = []
    first_epoch = 1
    state_file = state_path(out)
    if config.resume:
        first_epoch, records = _restore(state_file, model, optimizer, scheduler, rng, meta)
        if first_epoch > config.epochs:
            raise InputError(
                f"{state_file}: already trained for {first_epoch - 1} epoch(s); raise --epochs "
                "to train further"
            )
    started = time.perf_counter()
    plan.started = started
    steps = config.steps_per_epoch
    best, stopped, checkpoint_meta = None, False, meta
    for epoch in range(first_epoch, config.epochs + 1):
        if (epoch - 1) * steps >= plan.total:  # the time budget is spent
            break
        epoch_start = time.perf_counter()
        loss = _train_epoch(
            model,
            sampler,
            optimizer,
            scheduler,
            rng,
            device,
            steps,
            plan,
            progress,
            (epoch - 1) * steps,
            bf16,
        )
        checked = time.perf_counter()
        result = EpochResult(
            epoch=epoch,
            epochs=-(-plan.total // steps),
            loss=loss,
            validation=validate(model, scenes, splits, meta.normalization, device, meta.classes),
            seconds=time.perf_counter() - epoch_start,
        )
        history.append(result)
        records.append(result.to_dict())
        steps_done = min(epoch * steps, plan.total)
        meta = _with_training_info(
            meta, scenes, config, result, records, time.perf_counter() - started, steps_done
        )
        best = best_epoch(records) if config.patience else None
        if best is None or best == epoch:  # with patience, the checkpoint keeps the best
            weights_path = save_checkpoint(model, meta, weights_path)
            checkpoint_meta = meta
        _save_state(state_file, model, optimizer, scheduler, rng, epoch, records, meta)
        plan.validation_s = time.perf_counter() - checked
        if on_epoch is not None:
            on_epoch(result)
        if best is not None and config.patience and epoch - best >= config.patience:
            stopped = True
            break
    return TrainResult(
        weights_path, checkpoint_meta, tuple(history), best_epoch=best, stopped_early=stopped
    )


def best_epoch(records: Sequence[dict[str, Any]]) -> int | None:
    """The epoch of ``records`` with the best validation mIoU (the earliest of equals);
    ``None`` without validation."""
    scored = [(r["val_miou"], -r["epoch"]) for r in records if r.get("val_miou") is not None]
    return -max(scored)[1] if scored else None


def _with_training_info(
    meta: ModelMeta,
    scenes: Sequence[Scene],
    config: TrainConfig,
    last: EpochResult,
    records: Sequence[dict[str, Any]],
    seconds: float,
    steps_done: int,
) -> ModelMeta:
    config_dict = {k: v for k, v in dataclasses.asdict(config).items() if k != "command"}
    config_dict["classes"] = None if config.classes is None else config.classes.to_json()
    known = [s.gsd_m for s in scenes if s.gsd_m is not None]
    counts = label_counts(scenes, len(meta.classes))
    training = {
        "command": config.command,
        "labelled_pixels": {c.name: int(counts[c.id]) for c in meta.classes},
        "images": [s.name for s in scenes][:50],
        "n_images": len(scenes),
        "config": config_dict,
        "epochs_done": last.epoch,
        "steps_done": steps_done,
        "seconds": round(seconds, 1),
        "history": list(records),
    }
    if config.init is not None:
        training["fine_tuned_from"] = config.init
    metrics = {"validation": last.validation.to_dict()} if last.validation is not None else {}
    return dataclasses.replace(
        meta,
        agriseg_version=__version__,
        gsd_m=round(float(np.median(known)), 4) if known else None,
        pixel_kinds=tuple(sorted({pixel_kind(s.dtype) for s in scenes})),
        description=config.description or meta.description,
        metrics=metrics,
        training=training,
    )


def _check_label_ids(scenes: Sequence[Scene], classes: ClassList) -> None:
    for scene in scenes:
        ids = np.unique(scene.labels[scene.labels != NODATA])
        bad = ids[ids >= len(classes)]
        if bad.size:
            raise InputError(
                f"{scene.name}: labels hold class id(s) {bad[:10].tolist()} but the model has "
                f"{len(classes)} classes ({', '.join(classes.names)}); give --classes"
            )


def _save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    epoch: int,
    records: Sequence[dict[str, Any]],
    meta: ModelMeta,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(list(records)),
        "meta": meta.to_json(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _restore(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    meta: ModelMeta,
) -> tuple[int, list[dict[str, Any]]]:
    if not path.exists():
        raise InputError(f"{path}: no training state to resume from; drop --resume")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = ModelMeta.from_dict(json.loads(state["meta"]))
    if (saved.architecture, saved.encoder) != (meta.architecture, meta.encoder):
        raise ModelError(
            f"{path}: state is for {saved.architecture}/{saved.encoder}, not "
            f"{meta.architecture}/{meta.encoder}; use the same --arch/--encoder or a new --out"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = json.loads(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]) + 1, list(json.loads(state["history"]))


def load_training_set(
    sources: Sequence[tuple[Path, Path]], config: TrainConfig, progress: Progress | None = None
) -> TrainingSet:
    """Read ``(image, labels)`` file pairs and settle the classes the model will learn.

    The candidate classes are ``config.classes``, else ``config.init``'s, else those
    the labels name (:func:`~agriseg.labels.label_classes`). A model learns exactly
    the classes some label marks: a class of ``config.classes`` that no label marks
    is refused; one of ``init``'s or of the label-colour table is left out with a
    warning, and the remaining classes are renumbered.

    Raises:
        InputError: No pairs, unusable labels, a listed class never labelled, or
            fewer than two labelled classes.
    """
    if not sources:
        raise InputError("no training images given")
    classes = config.classes
    source = "--classes"
    if config.init is not None:
        _, base = find_model(config.init)
        wanted = base.bands
        if classes is None:
            classes, source = base.classes, f"--from {config.init}"
    else:
        with pixel_grid_ok():  # plain photos name their bands by colour alone
            wanted = new_model_bands(sources[0][0], config.bands, config.band_names)
    if classes is None:
        classes = label_classes(
            [label for _, label in sources],
            config.label_column,
            config.label_colors,
            config.label_layer,
        )
        source = "--label-colors" if config.label_colors else ""
    config = dataclasses.replace(config, classes=classes)
    scenes = []
    for done, (raster, labels) in enumerate(sources, start=1):
        scenes.append(load_scene(raster, labels, wanted, config, classes))
        if progress is not None:
            progress(done, len(sources))
    if config.keep_classes and config.init is not None and classes == base.classes:
        _check_label_ids(scenes, classes)
        return TrainingSet(tuple(scenes), classes, wanted, ())
    kept, classes, warnings = labelled_classes(scenes, classes, source)
    return TrainingSet(tuple(kept), classes, wanted, tuple(warnings))


def label_counts(scenes: Sequence[Scene], n_classes: int) -> np.ndarray:
    """Labelled pixels of each of ``n_classes`` class ids over ``scenes``."""
    counts = np.zeros(n_classes, dtype="int64")
    for scene in scenes:
        ids = scene.labels[scene.labels != NODATA]
        counts += np.bincount(ids, minlength=n_classes)[:n_classes]
    return counts


def labelled_classes(
    scenes: Sequence[Scene], classes: ClassList, source: str = ""
) -> tuple[list[Scene], ClassList, list[str]]:
    """Keep the classes some label marks; renumber the scenes' labels to match.

    ``source`` says where ``classes`` came from: ``--classes`` (a class no label
    marks is refused), another option (it is left out with a warning naming the
    option) or ``""`` (the labels themselves: left out silently).

    Returns:
        The scenes, the kept classes and the warnings.
    """
    _check_label_ids(scenes, classes)
    counts = label_counts(scenes, len(classes))
    kept = [c.id for c in classes if counts[c.id]]
    missing = [c.name for c in classes if not counts[c.id]]
    if missing and source == "--classes":
        them = "it" if len(missing) == 1 else "them"
        raise InputError(
            f"--classes lists {', '.join(missing)} but no label marks {them}; a model cannot "
            f"learn a class it never sees: label {them} or drop {them} from --classes"
        )
    if len(kept) < 2:
        marked = ", ".join(classes[k].name for k in kept) or "no class"
        raise InputError(
            f"the labels mark {marked} only; label at least two classes "
            "(e.g. crop and soil) so the model has something to tell apart"
        )
    if not missing:
        return list(scenes), classes, []
    lookup = np.full(256, NODATA, dtype="uint8")
    lookup[kept] = np.arange(len(kept), dtype="uint8")
    scenes = [dataclasses.replace(s, labels=lookup[s.labels]) for s in scenes]
    selected = classes.select(kept)
    warnings = []
    if source:
        them = "it" if len(missing) == 1 else "them"
        warnings.append(
            f"{', '.join(missing)} ({source}): no label marks {them}, so the model leaves "
            f"{them} out; it learns {', '.join(selected.names)}"
        )
    return scenes, selected, warnings


def train_files(
    sources: Sequence[tuple[Path, Path]],
    out: Path,
    config: TrainConfig,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train on ``(image, labels)`` file pairs; labels are a class raster, mask or vector file.

    The model learns the classes :func:`load_training_set` settles on; its warnings
    come back in the result.
    """
    data = load_training_set(sources, config)
    config = dataclasses.replace(config, classes=data.classes)
    result = train(data.scenes, out, config, data.band_names, progress, on_epoch)
    return dataclasses.replace(result, warnings=data.warnings)

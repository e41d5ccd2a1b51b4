"""Running a model over batches of tiles on CPU or CUDA.

One :class:`Predictor` per (model, device, threads) per process (see
:func:`get_predictor`): Dask tasks on a worker share it, so the model is loaded once
per worker, not per task. On CUDA it uses bf16/fp16 autocast, channels-last, pinned
memory and non-blocking copies; on CPU channels-last, which is ~3x faster for U-Nets.

The model runs in torch or, on CPU, in ONNX Runtime (see :func:`resolve_engine`):
same tiles in, same probabilities out, within float rounding. The ONNX Runtime
engine works on numpy arrays throughout and never imports torch, so it runs in an
install without PyTorch (``pip install agriseg``; see :mod:`agriseg.optional`).

CPU results depend, in their last bits, on the number of intra-op threads (kernels
split their reductions by thread). Every forward therefore runs with an explicit
thread count chosen once per run by the client, so a run gives identical outputs on
one machine or on any number of Dask workers.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from PIL import Image

from agriseg.config import ENGINES, RefineChoice
from agriseg.errors import InputError, MissingDependencyError, ModelError
from agriseg.models.meta import ModelMeta, Normalization
from agriseg.models.registry import find_model, is_index_file, is_onnx, shipped_dir
from agriseg.optional import (
    TORCH_INSTALL,
    exporter_available,
    onnxruntime_available,
    require_exporter,
    require_torch,
    torch_available,
)

if TYPE_CHECKING:
    import torch

    from agriseg.models.index_engine import IndexForward

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@functools.cache
def cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is installed (its CUDA library loads), found without
    importing PyTorch, whose import alone takes ~650 MB of memory."""
    names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def resolve_device_name(device: str) -> str:
    """Turn ``auto|cpu|cuda[:N]`` into the device a run uses (``cpu``, ``cuda``,
    ``cuda:N``), checking CUDA is there. Without PyTorch, or without an NVIDIA driver,
    ``auto`` is the CPU, and PyTorch is not imported to find that out."""
    if not _DEVICE_RE.match(device):
        raise InputError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device == "cpu" or (device == "auto" and not (torch_available() and cuda_driver_present())):
        return "cpu"
    require_torch(f"--device {device}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available; use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise InputError(
            f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
        )
    return device


def resolve_device(device: str) -> torch.device:
    """:func:`resolve_device_name` as a torch device (needs PyTorch)."""
    import torch

    return torch.device(resolve_device_name(device))


def default_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Intra-op threads per CPU forward pass unless told otherwise. One forward per core
#: at a time, each on one thread, measured ~10% faster on 2 cores than one forward
#: over all cores, and single-threaded kernels never stall at a barrier waiting for
#: a thread the readers and the health pass took their core from.
DEFAULT_FORWARD_THREADS = 1


def forward_streams(device: str, threads: int) -> int:
    """Forward passes a predictor runs at once: one on a GPU, cores / threads on CPU."""
    return 1 if device.startswith("cuda") else max(1, default_threads() // threads)


def normalization_terms(dtype: str, norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``, float32 ``(bands, 1, 1)``: model input is ``x * a - b`` of raw values
    ``x``, the one multiply and subtract per pixel that ``(x / scale - mean) / std`` is."""
    scale = np.float32(norm.scale_for(dtype))
    mean = np.asarray(norm.mean, dtype="float32")[:, None, None]
    std = np.asarray(norm.std, dtype="float32")[:, None, None]
    return (1 / (scale * std)).astype("float32"), (mean / std).astype("float32")


def normalize(
    data: np.ndarray, dtype: str, norm: Normalization, out: np.ndarray | None = None
) -> np.ndarray:
    """Raw pixel values (float32, NaN = invalid) to model input; NaN becomes 0 (the mean).

    ``data`` is ``(bands, ...)``, or ``(tiles, bands, ...)``. The result goes to ``out``
    when given (``data`` itself, float32, to normalise in place), else to a new array.
    """
    a, b = normalization_terms(dtype, norm)
    out = np.multiply(data, a, out=out, dtype="float32")
    out -= b
    # copyto with a mask: a third of nan_to_num's time, same result.
    np.copyto(out, 0, where=~np.isfinite(out))
    return out


#: What runs a model once ``auto`` is decided (``index``: a model without a network,
#: see :mod:`agriseg.models.index_engine`).
Engine = Literal["torch", "onnx", "index"]


def ships_onnx(model_path: str | Path) -> bool:
    """Whether ONNX Runtime can run ``model_path`` without exporting it: an exported
    ``.onnx`` file, or a shipped model (which ships its ``.onnx`` beside its weights)."""
    path = Path(model_path)
    if is_onnx(path):
        return True
    onnx_file = path.with_name(path.name.removesuffix(".safetensors") + ".onnx")
    return path.parent.resolve() == shipped_dir().resolve() and onnx_file.is_file()


def resolve_engine(engine: str, device: str, model_path: str | Path = "") -> Engine:
    """Turn ``auto|torch|onnx`` into the engine a run uses on ``device``.

    ``auto`` is ONNX Runtime on CPU when it is installed (faster there) and torch
    elsewhere; an exported ``.onnx`` model always runs in ONNX Runtime. Without
    PyTorch, ``auto`` is ONNX Runtime, which runs the shipped models and ``.onnx``
    files (other checkpoints are exported to ONNX first, which needs PyTorch).
    """
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if model_path and is_index_file(model_path):
        if engine != "auto":
            raise InputError(
                f"--engine {engine}: model {Path(model_path).stem} has no network to run in "
                "torch or ONNX Runtime (it computes its classes from the pixels); leave "
                "--engine out"
            )
        return "index"
    onnx_file = is_onnx(model_path)
    if engine == "torch" and onnx_file:
        raise InputError(
            f"--engine torch cannot run the ONNX model {model_path}; use --engine onnx "
            "or the checkpoint it was exported from"
        )
    if engine == "auto" and not onnx_file and torch_available():
        runnable = exporter_available() or ships_onnx(model_path)
        if device != "cpu" or not onnxruntime_available() or not runnable:
            return "torch"
    if engine == "torch":
        require_torch("--engine torch")
        return "torch"
    if device != "cpu":
        raise InputError(
            f"--engine onnx runs on CPU, not {device}; use --device cpu"
            + ("" if onnx_file else " or --engine torch")
        )
    if not onnxruntime_available():
        raise MissingDependencyError(
            f"--engine {engine} needs ONNX Runtime: pip install onnxruntime"
            + ("" if onnx_file else f" (or PyTorch for --engine torch: {TORCH_INSTALL})")
        )
    if model_path and not ships_onnx(model_path):
        require_exporter(f"exporting the checkpoint {model_path} to ONNX for ONNX Runtime")
    return "onnx"


def model_file(weights: Path, engine: Engine, model_tile: int, precision: str = "auto") -> Path:
    """The file a run loads for ``weights`` (see :func:`~agriseg.models.registry.find_model`).

    In ONNX Runtime a shipped model runs its shipped int8 variant with ``precision``
    ``int8``, and with ``auto`` where it ships one for ``model_tile`` px tiles; else
    ``weights`` as given (fp32; an exported ``.onnx`` file runs as it is).
    """
    from agriseg.models.onnx_export import INT8_SUFFIX, shipped_onnx

    if engine == "index":
        if precision == "int8":
            raise InputError(
                f"--precision int8: model {weights.stem} has no network, so no int8 variant; "
                "leave --precision out"
            )
        return weights
    if engine == "torch" or is_onnx(weights):
        if precision == "int8" and not str(weights).endswith(INT8_SUFFIX):
            how = "use --engine onnx (or auto, on CPU)" if engine == "torch" else "export one"
            raise InputError(
                f"--precision int8 runs the shipped models' int8 variants in ONNX Runtime "
                f"({weights} is not one): {how}, or --precision fp32"
            )
        return weights
    if precision != "fp32":
        int8 = shipped_onnx(weights, model_tile, "int8")
        if int8 is not None:
            return int8
        if precision == "int8":
            raise InputError(
                f"--precision int8: {weights.name} has no int8 variant for {model_tile} px "
                "tiles (the shipped models ship one at their own tile size): leave "
                "--tile-size out, or use --precision fp32"
            )
    return weights


def model_precision(path: str | Path) -> Literal["fp32", "int8"]:
    """The numbers a model file holds, as far as agriseg made it."""
    from agriseg.models.onnx_export import INT8_SUFFIX

    return "int8" if str(path).endswith(INT8_SUFFIX) else "fp32"


#: Model input and output arrays: numpy for ONNX Runtime, torch tensors for torch.
Array = TypeVar("Array")


def d4_mean(forward: Callable[[Array], Array], x: Array) -> Array:
    """Test-time augmentation: the mean of ``forward``'s probabilities over the eight
    views of the dihedral group D4 (four 90° rotations, each also mirrored), each
    brought back to the tiles' orientation. Square tiles only (as agriseg's are).

    ``x`` is a numpy array or a torch tensor (``np.rot90`` and ``Tensor.rot90`` turn
    the same way).
    """

    def rot90(t: Any, k: int) -> Any:
        return np.rot90(t, k, (-2, -1)) if isinstance(t, np.ndarray) else t.rot90(k, (-2, -1))

    def mirror(t: Any) -> Any:
        return np.flip(t, -1) if isinstance(t, np.ndarray) else t.flip(-1)

    total: Any = None
    for flip in (False, True):
        view = mirror(x) if flip else x
        for k in range(4):
            out = rot90(forward(rot90(view, k)), -k)
            out = mirror(out) if flip else out
            total = out if total is None else total + out
    return total / 8  # type: ignore[no-any-return]


def crf_marginals(probs: np.ndarray, tiles: np.ndarray, norm: Normalization) -> np.ndarray:
    """A dense CRF's marginals on the tiles' pixels (see :mod:`agriseg.models.refine`), the
    normalised tiles brought back to 0-255."""
    from agriseg.models.refine import refine_tiles

    std = np.asarray(norm.std, dtype="float32")[:, None, None]
    mean = np.asarray(norm.mean, dtype="float32")[:, None, None]
    images = (tiles * std + mean) * np.float32(255)
    return refine_tiles(probs, images)


class TorchForward:
    """Probabilities from a torch model: autocast on CUDA, channels-last everywhere."""

    def __init__(
        self, model: torch.nn.Module, device: str, normalization: Normalization | None = None
    ) -> None:
        import torch

        self.normalization = normalization or Normalization()
        self.device = torch.device(device)
        self.model = model.to(self.device).to(memory_format=torch.channels_last).eval()
        self._amp_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self._amp_dtype or torch.bfloat16,
            enabled=self._amp_dtype is not None,
        ):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)

    def run(
        self,
        tiles: np.ndarray,
        weight: np.ndarray | None,
        model_tile: int | None,
        tta: bool,
        threads: int,
        refine: RefineChoice = "none",
    ) -> tuple[np.ndarray, float]:
        """See :meth:`Predictor.probabilities`; resizing runs on the device too."""
        import torch

        with torch.inference_mode():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            probs = self._tile_probabilities(self._to_device(tiles), model_tile, tta)
            if refine == "crf":
                refined = crf_marginals(probs.cpu().numpy(), tiles, self.normalization)
                probs = torch.from_numpy(refined).to(self.device)
            if weight is not None:
                probs *= self._to_device(weight)
            out = probs.cpu().numpy()
            return out, time.perf_counter() - start

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """``array`` on the device: one copy, from pinned memory on CUDA (asynchronous)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(array))
        cuda = self.device.type == "cuda"
        if cuda:
            x = x.pin_memory()
        return x.to(self.device, non_blocking=cuda)

    def _tile_probabilities(
        self, tiles: torch.Tensor, model_tile: int | None, tta: bool
    ) -> torch.Tensor:
        """Probabilities of ``tiles`` (on the device), resized to ``model_tile`` for the
        model and back, over the eight views with ``tta``."""
        edge = int(tiles.shape[-1])
        resize = model_tile is not None and model_tile != edge
        if resize:
            tiles = _resize_on_device(tiles, model_tile or edge)
        probs = d4_mean(self, tiles) if tta else self(tiles)
        return _resize_on_device(probs, edge) if resize else probs

    def run_row(
        self,
        extent: np.ndarray,
        run: np.ndarray,
        stride: int,
        dtype: str,
        weight: np.ndarray,
        settled: Settled | None,
        model_tile: int | None,
        tta: bool,
        threads: int,
    ) -> BlendedRow:
        """See :meth:`Predictor.blended_row`: the extent goes to the device once and
        everything after happens there; only the float16 row and the settled classes
        come back."""
        import torch

        edge = int(extent.shape[1])
        a, b = normalization_terms(dtype, self.normalization)
        starts = [int(k) * stride for k in np.flatnonzero(run)]
        with torch.inference_mode():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            x = self._to_device(extent)
            x = x * self._to_device(a)  # a new tensor: ``extent`` stays as it was
            x -= self._to_device(b)
            x.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            tiles = torch.stack([x[:, :, s : s + edge] for s in starts])
            probs = self._tile_probabilities(tiles, model_tile, tta)
            probs *= self._to_device(weight)
            # Overlap-add at the stride: neighbours share at most half a tile, so each
            # value is one float32 sum of at most two, rounded to float16 once.
            row = torch.zeros(
                (probs.shape[1], edge, (len(run) - 1) * stride + edge),
                dtype=probs.dtype,
                device=self.device,
            )
            for k, s in enumerate(starts):
                row[:, :, s : s + edge] += probs[k]
            row16 = row.to(torch.float16)
            classes = confidence = None
            if settled is not None:
                # As the stitch does it: the float16 sums over the summed weights, the
                # first class of the highest probability, that probability in percent.
                region = row16[:, settled.rows, settled.cols].to(torch.float32)
                region /= self._to_device(settled.weights)
                best, ids = region.max(dim=0)
                classes = ids.to(torch.uint8).cpu().numpy()
                confidence = torch.round(best * 100).clamp_(0, 100).to(torch.uint8).cpu().numpy()
            sums = row16.cpu().numpy()
            return BlendedRow(sums, classes, confidence, time.perf_counter() - start)


@dataclass(frozen=True)
class Settled:
    """Where in a chunk's row of tiles the classes are settled by its tiles alone (see
    :meth:`~agriseg.segmentation.tiling.TileGrid.settled`): rows and columns of the
    row, and the tiles' weights summed there (float32)."""

    rows: slice
    cols: slice
    weights: np.ndarray


@dataclass(frozen=True)
class BlendedRow:
    """A chunk's row of tiles run and blended (see :meth:`Predictor.blended_row`)."""

    sums: np.ndarray  # (C, tile, width) float16: probabilities x weights, summed
    classes: np.ndarray | None  # uint8 class ids where settled, else None
    confidence: np.ndarray | None  # uint8 0-100 where settled, else None
    seconds: float  # on the device


def resize_tiles(tiles: np.ndarray, size: int) -> np.ndarray:
    """Resize a float32 batch ``(N, C, H, W)`` to ``size`` x ``size``: bilinear,
    antialiased when shrinking (Pillow's filter, which torch's ``interpolate(...,
    antialias=True)`` copies: the torch engine resizes with it on the device)."""
    if tiles.shape[-1] == size and tiles.shape[-2] == size:
        return tiles
    n, channels = tiles.shape[:2]
    out = np.empty((n, channels, size, size), dtype="float32")
    for i in range(n):
        for c in range(channels):
            image = Image.fromarray(np.ascontiguousarray(tiles[i, c], dtype="float32"))
            out[i, c] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _resize_on_device(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`resize_tiles` in torch, on the tiles' device (same filters:
    bilinear, antialiased when shrinking)."""
    import torch

    shrinking = size < tiles.shape[-1]
    return torch.nn.functional.interpolate(
        tiles, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )


@dataclass(frozen=True)
class OrtSettings:
    """ONNX Runtime session options of a CPU forward (``scripts/ort_settings.py``
    measures them; the defaults are what won on the 2-core VM, see docs/performance.md).

    Attributes:
        optimization: graph optimisation level (``all`` adds CPU layout transforms).
        parallel: run independent graph nodes at once (``ORT_PARALLEL``) on
            ``inter_op_threads`` threads; a run's parallelism is its forward streams
            instead (see :func:`forward_streams`).
        inter_op_threads: threads for independent nodes when ``parallel``.
        spinning: let idle intra-op threads spin-wait (only matters with more than one
            thread per forward).
        memory_arena: ONNX Runtime's CPU memory arena, which keeps a forward's
            intermediate buffers for the next one. Without it each forward maps
            them afresh (they exceed glibc's 32 MB mmap ceiling) and the kernel
            faults in and zeroes every page: a quarter of a forward's CPU time.
        tiles_per_run: tiles a session runs at once; a chunk's batch is run this
            many at a time into one array. The arena keeps the biggest run's
            buffers, so one 512 px tile at a time needs a quarter of four tiles'
            memory, and runs as fast (two forward streams alone: 227 MB peak
            against 425 MB, 42-44 ms a tile either way). The probabilities do not
            depend on it.
    """

    optimization: Literal["basic", "extended", "all"] = "all"
    parallel: bool = False
    inter_op_threads: int = 1
    spinning: bool = True
    memory_arena: bool = True
    tiles_per_run: int = 1

    def session_options(self, threads: int) -> Any:
        """``onnxruntime.SessionOptions`` for forwards on ``threads`` intra-op threads."""
        import onnxruntime as ort

        levels = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.optimization]
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if self.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        # Fixed, like torch's: outputs then do not depend on the machine's core count.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = self.inter_op_threads
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.spinning else "0"
        )
        options.enable_cpu_mem_arena = self.memory_arena
        return options


class OnnxForward:
    """Probabilities from ONNX Runtime on CPU, one session per tile edge; numpy only.

    ``source`` is an exported ``.onnx`` file (one fixed edge) or a checkpoint, exported
    once per edge it meets, on first use, into the cache (see
    :func:`~agriseg.models.onnx_export.cached_export`).
    """

    def __init__(
        self, meta: ModelMeta, threads: int, source: Path, settings: OrtSettings | None = None
    ) -> None:
        self.meta = meta
        self.threads = threads
        self.settings = settings or OrtSettings()
        self._checkpoint: Path | None = None
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        if is_onnx(source):
            self._sessions[meta.tile_size] = self._session(str(source))
        else:
            self._checkpoint = source

    def _session(self, source: str | bytes) -> Any:
        import onnxruntime as ort

        options = self.settings.session_options(self.threads)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def session_for(self, edge: int) -> Any:
        with self._lock:
            session = self._sessions.get(edge)
            if session is None:
                if self._checkpoint is None:
                    fixed = ", ".join(map(str, sorted(self._sessions)))
                    raise ModelError(
                        f"this ONNX model takes {fixed} px tiles, not {edge}: "
                        f"use --tile-size {fixed}"
                    )
                from agriseg.models.onnx_export import cached_export

                session = self._session(cached_export(self._checkpoint, self.meta, edge))
                self._sessions[edge] = session
            return session

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, C, T, T)`` of tiles ``x`` ``(N, B, T, T)``, run
        :attr:`OrtSettings.tiles_per_run` at a time."""
        session = self.session_for(int(x.shape[-1]))
        name = session.get_inputs()[0].name
        tiles = np.ascontiguousarray(x, dtype="float32")
        step = self.settings.tiles_per_run
        if len(tiles) <= step:
            return session.run(None, {name: tiles})[0]  # type: ignore[no-any-return]
        first = session.run(None, {name: tiles[:step]})[0]
        out = np.empty((len(tiles), *first.shape[1:]), dtype=first.dtype)
        out[:step] = first
        for start in range(step, len(tiles), step):
            out[start : start + step] = session.run(None, {name: tiles[start : start + step]})[0]
        return out

    def run(
        self,
        tiles: np.ndarray,
        weight: np.ndarray | None,
        model_tile: int | None,
        tta: bool,
        threads: int,
        refine: RefineChoice = "none",
    ) -> tuple[np.ndarray, float]:
        """See :meth:`Predictor.probabilities` (``threads`` is the sessions')."""
        start = time.perf_counter()
        edge = tiles.shape[-1]
        resize = model_tile is not None and model_tile != edge
        x = resize_tiles(tiles, model_tile or edge) if resize else tiles
        probs = d4_mean(self, x) if tta else self(x)
        if resize:
            probs = resize_tiles(probs, edge)
        if refine == "crf":
            probs = crf_marginals(probs, tiles, self.meta.normalization)
        if weight is not None:
            probs *= weight
        return probs, time.perf_counter() - start


class Predictor:
    """A model on a device, turning normalised tiles into class probabilities."""

    def __init__(
        self,
        forward: TorchForward | OnnxForward | IndexForward,
        meta: ModelMeta,
        device: str,
        threads: int,
        engine: Engine = "torch",
    ) -> None:
        if threads < 1:
            raise InputError(f"--threads {threads} must be at least 1")
        self.meta = meta
        self.device = device
        self.threads = threads
        self.engine = engine
        self.forward = forward
        # Forwards run on the predictor's own threads (each keeps one OpenMP team),
        # as many at once as the device takes (see forward_streams).
        self.streams = forward_streams(device, threads)
        self._executor = ThreadPoolExecutor(self.streams, thread_name_prefix="agriseg-forward")

    @property
    def blends_on_device(self) -> bool:
        """Whether :meth:`blended_row` runs a chunk on the model's device (torch, a
        network's own probabilities); else the chunk's tiles are cut and blended here."""
        return isinstance(self.forward, TorchForward) and self.meta.vegetation_mask != "index"

    def blended_row(
        self,
        extent: np.ndarray,
        run: np.ndarray,
        stride: int,
        dtype: str,
        weight: np.ndarray,
        settled: Settled | None = None,
        model_tile: int | None = None,
        tta: bool = False,
    ) -> BlendedRow:
        """A chunk's row of tiles, from raw pixels to blended probabilities, on the device.

        ``extent`` is the chunk's raw pixel values (``(bands, tile, width)`` float32,
        NaN invalid, padded beyond the raster) of pixel type ``dtype``; ``run`` says
        which of its tiles (one every ``stride`` px) the model sees. The pixels are
        normalised, cut into tiles (``model_tile``, ``tta``: see :meth:`probabilities`),
        run, multiplied by ``weight`` and summed where tiles overlap, all on the device:
        one copy in; back come the row's float16 sums ``(C, tile, width)`` (a tile left
        out adds nothing), the same as cutting, running and
        :func:`~agriseg.segmentation.segment.join_row` on the host, and, where
        ``settled`` says no other chunk's tiles reach, the classes and confidence
        (uint8), the same as the stitch would make of the sums.
        """
        if not self.blends_on_device:
            raise ValueError(f"the {self.engine} engine blends tiles on the host")
        assert isinstance(self.forward, TorchForward)
        return self._executor.submit(
            self.forward.run_row,
            extent,
            run,
            stride,
            dtype,
            weight,
            settled,
            model_tile,
            tta,
            self.threads,
        ).result()

    def probabilities(
        self,
        tiles: np.ndarray,
        weight: np.ndarray | None = None,
        model_tile: int | None = None,
        tta: bool = False,
        refine: RefineChoice = "none",
    ) -> tuple[np.ndarray, float]:
        """Softmax probabilities ``(N, C, H, W)`` for normalised tiles ``(N, B, H, W)``.

        With ``model_tile``, tiles are resized to that edge for the model and the
        probabilities resized back, on the device (see :mod:`agriseg.segmentation.scale`). With
        ``tta``, the probabilities are the mean over the tiles' eight D4 views (see
        :func:`d4_mean`). With ``refine="crf"`` they are a dense CRF's marginals, on
        the tiles' pixels (see :mod:`agriseg.models.refine`). When ``weight`` (``H x W``) is
        given the probabilities come back multiplied by it, computed on the device. Also
        returns the seconds spent on the device, resizing and CRF included (excluding
        waiting for it).
        """
        if self.meta.vegetation_mask != "index":
            return self._executor.submit(
                self.forward.run, tiles, weight, model_tile, tta, self.threads, refine
            ).result()
        from agriseg.models.index_plants import plants_on_index

        probs, seconds = self._executor.submit(
            self.forward.run, tiles, None, model_tile, tta, self.threads, refine
        ).result()
        start = time.perf_counter()
        probs = plants_on_index(probs, tiles, self.meta)
        if weight is not None:
            probs *= weight
        return probs, seconds + time.perf_counter() - start


_PREDICTORS: dict[tuple[str, str, int, str], Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()
_LOADS = 0


def get_predictor(
    model_ref: str | Path, device: str, threads: int | None = None, engine: Engine = "torch"
) -> Predictor:
    """The process-wide predictor for ``model_ref`` on ``device`` run by ``engine``
    (loaded on first use).

    ``threads`` defaults to :data:`DEFAULT_FORWARD_THREADS`.
    """
    global _LOADS
    key = (str(model_ref), device, DEFAULT_FORWARD_THREADS if threads is None else threads, engine)
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            device_name = resolve_device_name(device)
            forward: TorchForward | OnnxForward | IndexForward
            if engine == "index":
                from agriseg.models.index_engine import IndexForward

                meta = find_model(model_ref)[1]
                forward = IndexForward(meta)
            elif engine == "onnx":
                source, meta = find_model(model_ref)
                forward = OnnxForward(meta, key[2], source)
            else:
                require_torch("--engine torch")
                from agriseg.models.registry import load_model

                model, meta = load_model(model_ref)
                forward = TorchForward(model, device_name, meta.normalization)
            predictor = Predictor(forward, meta, device_name, key[2], engine)
            _PREDICTORS[key] = predictor
            _LOADS += 1
        return predictor


def model_loads() -> int:
    """How many times this process has loaded a model (e.g. via ``client.run`` on workers)."""
    return _LOADS

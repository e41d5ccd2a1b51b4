"""Running a model over batches of tiles on CPU or CUDA.

One :class:`Predictor` per (model, device, threads) per process (see
:func:`get_predictor`): Dask tasks on a worker share it, so the model is loaded once
per worker, not per task. On CUDA it uses bf16/fp16 autocast, channels-last, pinned
memory and non-blocking copies; on CPU channels-last, which is ~3x faster for U-Nets.

The model runs in torch or, on CPU, in ONNX Runtime (see :func:`resolve_engine`):
same tiles in, same probabilities out, within float rounding.

CPU results depend, in their last bits, on the number of intra-op threads (kernels
split their reductions by thread). Every forward therefore runs with an explicit
thread count chosen once per run by the client, so a run gives identical outputs on
one machine or on any number of Dask workers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from agriseg.config import ENGINES, RefineChoice
from agriseg.errors import InputError, ModelError
from agriseg.models import ModelMeta, Normalization, find_model, is_onnx, load_model
from agriseg.scale import resize_tiles

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> torch.device:
    """Turn ``auto|cpu|cuda[:N]`` into a torch device, checking CUDA is there."""
    if not _DEVICE_RE.match(device):
        raise InputError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is available; use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return torch.device(device)


def default_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Intra-op threads per CPU forward pass unless told otherwise. One forward per core
#: at a time, each on one thread, measured ~10% faster on 2 cores than one forward
#: over all cores, and single-threaded kernels never stall at a barrier waiting for
#: a thread the readers and the health pass took their core from.
DEFAULT_FORWARD_THREADS = 1


def forward_streams(device: torch.device, threads: int) -> int:
    """Forward passes a predictor runs at once: one on a GPU, cores / threads on CPU."""
    return 1 if device.type == "cuda" else max(1, default_threads() // threads)


def normalize(data: np.ndarray, dtype: str, norm: Normalization) -> np.ndarray:
    """Raw pixel values (float32, NaN = invalid) to model input; NaN becomes 0 (the mean)."""
    scale = np.float32(norm.scale_for(dtype))
    mean = np.asarray(norm.mean, dtype="float32")[:, None, None]
    std = np.asarray(norm.std, dtype="float32")[:, None, None]
    # One multiply-add per pixel: (x / scale - mean) / std = x * a + b.
    out = np.multiply(data, 1 / (scale * std), dtype="float32")
    out -= mean / std
    # copyto with a mask: a third of nan_to_num's time, same result.
    np.copyto(out, 0, where=~np.isfinite(out))
    return out


#: What runs a model once ``auto`` is decided.
Engine = Literal["torch", "onnx"]


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime, and onnx to export checkpoints for it, can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_engine(engine: str, device: torch.device, model_path: str | Path = "") -> Engine:
    """Turn ``auto|torch|onnx`` into the engine a run uses on ``device``.

    ``auto`` is ONNX Runtime on CPU when it is installed (faster there) and torch
    elsewhere; an exported ``.onnx`` model always runs in ONNX Runtime.
    """
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    onnx_file = is_onnx(model_path)
    if engine == "torch" and onnx_file:
        raise InputError(
            f"--engine torch cannot run the ONNX model {model_path}; use --engine onnx "
            "or the checkpoint it was exported from"
        )
    if engine == "auto" and not onnx_file:
        return "onnx" if device.type == "cpu" and onnxruntime_available() else "torch"
    if engine == "torch":
        return "torch"
    if device.type != "cpu":
        raise InputError(
            f"--engine onnx runs on CPU, not {device}; use --device cpu"
            + ("" if onnx_file else " or --engine torch")
        )
    if not onnxruntime_available():
        raise InputError(
            "--engine onnx needs ONNX Runtime: pip install onnxruntime onnx (or use --engine torch)"
        )
    return "onnx"


class TorchForward:
    """Probabilities from a torch model: autocast on CUDA, channels-last everywhere."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()
        self.device = device
        self._amp_dtype: torch.dtype | None = None
        if device.type == "cuda":
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self._amp_dtype or torch.bfloat16,
            enabled=self._amp_dtype is not None,
        ):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)


#: Threads running independent graph nodes at once; a run's parallelism is its forward
#: streams instead (see :func:`forward_streams`).
ORT_INTER_OP_THREADS = 1


class OnnxForward:
    """Probabilities from ONNX Runtime on CPU, one session per tile edge.

    ``source`` is an exported ``.onnx`` file (one fixed edge) or a checkpoint, exported
    once per edge it meets, on first use, into the cache (see
    :func:`~agriseg.onnx_export.cached_export`).
    """

    def __init__(self, meta: ModelMeta, threads: int, source: Path) -> None:
        self.meta = meta
        self.threads = threads
        self._checkpoint: Path | None = None
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        if is_onnx(source):
            self._sessions[meta.tile_size] = self._session(str(source))
        else:
            self._checkpoint = source

    def _session(self, source: str | bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Fixed, like torch's: outputs then do not depend on the machine's core count.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = ORT_INTER_OP_THREADS
        # Without the arena a 2048² bench peaked 350-480 MB lower (below torch's), at
        # some speed: end to end 0.76x torch's time against 0.64-0.69x with it (2-core VM).
        options.enable_cpu_mem_arena = False
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
                from agriseg.onnx_export import cached_export

                session = self._session(cached_export(self._checkpoint, self.meta, edge))
                self._sessions[edge] = session
            return session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session_for(int(x.shape[-1]))
        tiles = np.ascontiguousarray(x.numpy(), dtype="float32")
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: tiles})[0])


class Predictor:
    """A model on a device, turning normalised tiles into class probabilities."""

    def __init__(
        self,
        forward: TorchForward | OnnxForward,
        meta: ModelMeta,
        device: torch.device,
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
        probabilities resized back, on the device (see :mod:`agriseg.scale`). With
        ``tta``, the probabilities are the mean over the tiles' eight D4 views (see
        :func:`d4_mean`). With ``refine="crf"`` they are a dense CRF's marginals, on
        the tiles' pixels (see :mod:`agriseg.refine`). When ``weight`` (``H x W``) is
        given the probabilities come back multiplied by it, computed on the device. Also
        returns the seconds spent on the device, resizing and CRF included (excluding
        waiting for it).
        """
        return self._executor.submit(self._forward, tiles, weight, model_tile, tta, refine).result()

    def _forward(
        self,
        tiles: np.ndarray,
        weight: np.ndarray | None,
        model_tile: int | None,
        tta: bool = False,
        refine: RefineChoice = "none",
    ) -> tuple[np.ndarray, float]:
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        cuda = self.device.type == "cuda"
        if cuda:
            x = x.pin_memory()
        edge = x.shape[-1]
        resize = model_tile is not None and model_tile != edge
        with torch.inference_mode():
            torch.set_num_threads(self.threads)
            start = time.perf_counter()
            x = x.to(self.device, non_blocking=cuda)
            if resize:
                x = resize_tiles(x, model_tile or edge)
            probs = d4_mean(self.forward, x) if tta else self.forward(x)
            if resize:
                probs = resize_tiles(probs, edge)
            if refine == "crf":
                probs = self._crf(probs, tiles)
            if weight is not None:
                probs *= torch.from_numpy(weight).to(self.device, non_blocking=cuda)
            out = probs.cpu().numpy()
            return out, time.perf_counter() - start

    def _crf(self, probs: torch.Tensor, tiles: np.ndarray) -> torch.Tensor:
        """A dense CRF's marginals on the tiles' pixels, brought back to 0-255."""
        from agriseg.refine import refine_tiles

        norm = self.meta.normalization
        std = np.asarray(norm.std, dtype="float32")[:, None, None]
        mean = np.asarray(norm.mean, dtype="float32")[:, None, None]
        images = (tiles * std + mean) * np.float32(255)
        refined = refine_tiles(probs.cpu().numpy(), images)
        return torch.from_numpy(refined).to(self.device)


def d4_mean(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the mean of ``forward``'s probabilities over the eight
    views of the dihedral group D4 (four 90° rotations, each also mirrored), each
    brought back to the tiles' orientation. Square tiles only (as agriseg's are)."""
    total: torch.Tensor | None = None
    for flip in (False, True):
        view = x.flip(-1) if flip else x
        for k in range(4):
            out = torch.rot90(forward(torch.rot90(view, k, (-2, -1))), -k, (-2, -1))
            out = out.flip(-1) if flip else out
            total = out if total is None else total + out
    assert total is not None
    return total / 8


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
            torch_device = resolve_device(device)
            forward: TorchForward | OnnxForward
            if engine == "onnx":
                source, meta = find_model(model_ref)
                forward = OnnxForward(meta, key[2], source)
            else:
                model, meta = load_model(model_ref)
                forward = TorchForward(model, torch_device)
            predictor = Predictor(forward, meta, torch_device, key[2], engine)
            _PREDICTORS[key] = predictor
            _LOADS += 1
        return predictor


def model_loads() -> int:
    """How many times this process has loaded a model (e.g. via ``client.run`` on workers)."""
    return _LOADS

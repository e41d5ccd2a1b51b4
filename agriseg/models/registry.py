"""Where models are: the shipped models, checkpoint files, exported ONNX files, loading.

A checkpoint is two files side by side: ``NAME.safetensors`` (the weights) and
``NAME.json`` (:class:`ModelMeta`: architecture, encoder, classes, input bands and
normalisation, tile size, ground sampling distance, agriseg version). Shipped models
live in :mod:`agriseg.weights` and are addressed by name; anything else by path.
The networks themselves are built by :mod:`agriseg.models.architectures`; torch is imported
only by the functions that save or load weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from agriseg.errors import InputError, ModelError
from agriseg.io.atomic import atomic_output, write_text_atomic
from agriseg.models.meta import ModelMeta, is_index_model, read_meta
from agriseg.models.onnx_format import read_onnx_meta
from agriseg.optional import require_torch

if TYPE_CHECKING:
    import torch

#: Shipped model names; ``default`` is an alias.
DEFAULT_MODEL = "agriseg-unet"
ALIASES = {"default": DEFAULT_MODEL, "unet": "agriseg-unet", "pspnet": "agriseg-pspnet"}


#: File stem of the checkpoint in a model folder (``agriseg train --out FOLDER``).
FOLDER_CHECKPOINT = "model"

#: Suffix of checkpoint weights files.
CHECKPOINT_SUFFIX = ".safetensors"


def checkpoint_paths(path: Path) -> tuple[Path, Path]:
    """The ``(weights, metadata)`` pair for a checkpoint given by either file, stem or
    model folder (holding ``model.safetensors`` + ``model.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / FOLDER_CHECKPOINT
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def output_checkpoint(out: Path) -> Path:
    """The weights file a training run writes for ``--out``: ``out`` itself when it ends
    in ``.safetensors``, else ``out/model.safetensors`` (a model folder).

    Raises:
        InputError: ``out`` is another kind of file.
    """
    out = Path(out)
    if out.suffix == CHECKPOINT_SUFFIX:
        return out
    if out.suffix.lower() in (".json", ".pt", ".onnx", ".pth") or out.is_file():
        raise InputError(
            f"--out {out}: name a folder (the model goes into {out.stem}/) or a file "
            f"ending in {CHECKPOINT_SUFFIX}"
        )
    return out / (FOLDER_CHECKPOINT + CHECKPOINT_SUFFIX)


def model_name(weights: Path) -> str:
    """A checkpoint's name: its folder's for ``FOLDER/model.safetensors``, else its stem."""
    weights = Path(weights)
    stem = weights.name.removesuffix(CHECKPOINT_SUFFIX)
    return weights.resolve().parent.name if stem == FOLDER_CHECKPOINT else stem


def save_checkpoint(
    model: torch.nn.Module, meta: ModelMeta, path: Path, half: bool = False
) -> Path:
    """Write weights and metadata atomically; returns the weights path.

    ``half`` stores floating-point weights as float16 (shipped models, half the size);
    they are loaded back as float32.
    """
    from safetensors.torch import save_file

    weights, meta_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        tensors[key] = value.half() if half and value.is_floating_point() else value
    with atomic_output(weights) as tmp:
        save_file(tensors, str(tmp))
        tmp.chmod(0o644)
    write_text_atomic(meta_path, meta.to_json() + "\n")
    return weights


def shipped_dir() -> Path:
    return Path(str(resources.files("agriseg.weights")))


def shipped_models() -> list[ModelMeta]:
    """Metadata of every model shipped inside the package."""
    metas = []
    for meta_path in sorted(shipped_dir().glob("*.json")):
        metas.append(read_meta(meta_path))
    return metas


#: Suffix of an exported ONNX model (see :mod:`agriseg.models.onnx_export`).
ONNX_SUFFIX = ".onnx"


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an exported ONNX model rather than a checkpoint."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def is_index_file(path: str | Path) -> bool:
    """Whether a path :func:`resolve` gave names a model without a network (its metadata)."""
    return Path(path).suffix == ".json"


def resolve(ref: str | Path) -> Path:
    """Find the weights file for a shipped model name, a checkpoint path or an ONNX file
    (for a shipped model without a network, its metadata file)."""
    text = str(ref)
    name = ALIASES.get(text, text)
    shipped = shipped_dir() / f"{name}.safetensors"
    if shipped.exists():
        return shipped
    if "/" not in name and (shipped_dir() / f"{name}.json").is_file():
        return shipped_dir() / f"{name}.json"
    if is_onnx(text):
        if not Path(text).is_file():
            raise ModelError(f"{text}: no such ONNX model (export one with `agriseg export`)")
        return Path(text)
    weights, meta_path = checkpoint_paths(Path(text))
    if weights.exists() or meta_path.exists():
        return weights
    names = sorted({*ALIASES, *(m.name for m in shipped_models())})
    raise ModelError(
        f"unknown model {text!r}: not a shipped model ({', '.join(names)}) "
        "nor an existing checkpoint (a folder holding model.safetensors + model.json, "
        "or NAME.safetensors + NAME.json)"
    )


def find_model(ref: str | Path) -> tuple[Path, ModelMeta]:
    """The weights file and metadata of a shipped model (by name), a checkpoint or an
    exported ONNX model (by path)."""
    weights = resolve(ref)
    if is_onnx(weights):
        return weights, read_onnx_meta(weights)
    return weights, read_meta(checkpoint_paths(weights)[1])


def load_model(ref: str | Path) -> tuple[torch.nn.Module, ModelMeta]:
    """Load a shipped model (by name) or a checkpoint (by path), in eval mode on CPU."""
    resolved = resolve(ref)
    if is_onnx(resolved):
        raise ModelError(
            f"{resolved}: an ONNX model runs only in ONNX Runtime (--engine onnx or auto, "
            "on CPU); torch needs the checkpoint (NAME.safetensors + NAME.json)"
        )
    if resolved.suffix == ".json" and is_index_model(read_meta(resolved)):
        raise ModelError(
            f"{resolved.stem}: a model without a network (its classes come from each tile's "
            "pixels); it has no weights to load, train or export"
        )
    require_torch(f"loading {resolved} into torch")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from agriseg.models.architectures import build_model

    weights, meta_path = checkpoint_paths(resolved)
    meta = read_meta(meta_path)
    model = build_model(meta)
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise ModelError(f"{weights}: checkpoint weights are missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights}: corrupt checkpoint weights ({exc})") from None
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(
            f"{weights}: weights do not match {meta.architecture}/{meta.encoder} ({first})"
        ) from None
    return model.eval(), meta

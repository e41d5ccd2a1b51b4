"""The ONNX files agriseg writes: opset, input and output names, and agriseg's metadata.

An exported graph (:mod:`agriseg.models.onnx_graph`, written by
:mod:`agriseg.models.onnx_export`) takes NCHW float32 tiles of one fixed edge and
returns softmax probabilities; its ``metadata_props`` hold agriseg's
:class:`~agriseg.models.meta.ModelMeta` under :data:`AGRISEG_META_KEY`. Reading that
needs ONNX Runtime alone (imported when it reads), not PyTorch or onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

from agriseg.errors import ModelError
from agriseg.models.meta import SIZE_DIVISOR, ModelMeta

#: ONNX opset of exported graphs (Deepness's ONNX Runtime reads 17 and later).
OPSET = 17

#: Names of the graph's input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"

#: ``metadata_props`` key holding agriseg's :class:`ModelMeta` as JSON.
AGRISEG_META_KEY = "agriseg_meta"


def check_export_tile(tile_size: int) -> None:
    if tile_size < SIZE_DIVISOR or tile_size % SIZE_DIVISOR:
        raise ModelError(
            f"--tile-size {tile_size}: an exported model needs a multiple of {SIZE_DIVISOR} "
            f"pixels, at least {SIZE_DIVISOR}"
        )


def read_onnx_meta(path: Path) -> ModelMeta:
    """agriseg's metadata of an exported ONNX file (see :data:`AGRISEG_META_KEY`).

    Read by ONNX Runtime (an unoptimised session), so the onnx package is not needed.
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    if not Path(path).is_file():
        raise ModelError(f"{path}: no such ONNX model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unreadable = (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, OSError)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except unreadable as exc:
        first = " ".join(str(exc).split())
        raise ModelError(f"{path}: not a readable ONNX model ({first})") from None
    props = session.get_modelmeta().custom_metadata_map
    if AGRISEG_META_KEY not in props:
        raise ModelError(
            f"{path}: an ONNX model without agriseg metadata ({AGRISEG_META_KEY!r}); "
            "export it with `agriseg export`"
        )
    try:
        return ModelMeta.from_dict(json.loads(props[AGRISEG_META_KEY]))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid agriseg metadata ({exc})") from None

"""A torch model as an ONNX graph: softmax probabilities out, pooling made exportable.

The graph takes NCHW float32 tiles of one fixed edge with a dynamic batch axis.
Needs PyTorch (``pip install "agriseg[torch]"``); :mod:`agriseg.models.onnx_export` imports
this module only when it exports.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPBlock

from agriseg.models.meta import ModelMeta
from agriseg.models.onnx_format import INPUT_NAME, OPSET, OUTPUT_NAME, check_export_tile


class _WithSoftmax(torch.nn.Module):
    """The network followed by a softmax over classes: the exported graph."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def _bins(length: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling bins: ``floor(i * L / out)`` to ``ceil((i + 1) * L / out)``."""
    return [((i * length) // out, -(-((i + 1) * length) // out)) for i in range(out)]


class _AdaptiveAvgPool2d(torch.nn.Module):
    """``AdaptiveAvgPool2d`` for one input size, as fixed slices and means: the same
    bins, so the same values, but exportable for any output size (ONNX has no
    adaptive pooling, and the exporter takes only output sizes dividing the input:
    PSPNet's 3 and 6 do not)."""

    def __init__(self, output_size: Any, input_size: tuple[int, int]) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, tuple) else (output_size, output_size)
        height, width = input_size
        self.rows = _bins(height, size[0] or height)
        self.cols = _bins(width, size[1] or width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                torch.cat(
                    [x[..., r0:r1, c0:c1].mean(dim=(-2, -1), keepdim=True) for c0, c1 in self.cols],
                    dim=-1,
                )
                for r0, r1 in self.rows
            ],
            dim=-2,
        )


class _PSPBlock(torch.nn.Module):
    """smp's ``PSPBlock`` for one input size, as it runs in eager mode (pool, convolve,
    upsample): under ONNX export smp swaps its pooling for an ``area`` interpolation,
    which the exporter refuses for PSPNet's 3 and 6 bins."""

    def __init__(self, block: PSPBlock, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.pool = torch.nn.Sequential(
            _AdaptiveAvgPool2d(block.pool[0].output_size, input_size), *block.pool[1:]
        )
        self.size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.pool(x), size=self.size, mode="bilinear", align_corners=True)


def _exportable(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of ``model`` whose adaptive average pools export to ONNX for tiles the
    size of ``example``: one forward records the size each pool sees."""
    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))
        )
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.AdaptiveAvgPool2d, PSPBlock))
    ]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    for name, size in sizes.items():
        if any(name.startswith(outer + ".") for outer in sizes):
            continue  # the pool of a PSPBlock, replaced with it
        module = model.get_submodule(name)
        if isinstance(module, PSPBlock):
            replacement: torch.nn.Module = _PSPBlock(module, size)
        else:
            replacement = _AdaptiveAvgPool2d(module.output_size, size)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, replacement)
    return model


def export_bytes(model: torch.nn.Module, meta: ModelMeta, tile_size: int) -> bytes:
    """The serialised ONNX graph of ``model`` (without metadata) for ``tile_size`` tiles."""
    check_export_tile(tile_size)
    example = torch.zeros((1, len(meta.bands), tile_size, tile_size), dtype=torch.float32)
    wrapper = _WithSoftmax(_exportable(model, example)).eval()
    buffer = io.BytesIO()
    # The TorchScript exporter: the torch.export one needs onnxscript and gives the
    # same graph for these convolutional networks.
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,  # type: ignore[arg-type]  # a file-like object works (documented)
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()

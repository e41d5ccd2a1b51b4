"""Network architectures agriseg can build: the registry and its two home-made members.

Five come from segmentation-models-pytorch (``unet``, ``pspnet``, ``deeplabv3``,
``deeplabv3plus``, ``fpn``). ``fcn`` is torchvision's FCN head (as in
``fcn_resnet50``: a 3x3 convolution, batch norm, ReLU, dropout, a 1x1 classifier,
bilinear upsampling) on a dilated segmentation-models-pytorch encoder. ``segnet`` is
written here because no maintained package has it: a small VGG-style encoder whose
max-pooling indices drive the decoder's unpooling. Encoders are always built with
random weights (``encoder_weights=None``): nothing is ever downloaded.

Every network names its final classifier ``segmentation_head``, so fine-tuning to
new classes (:func:`with_classes`) replaces just that layer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from agriseg.errors import ModelError

if TYPE_CHECKING:
    from agriseg.classes import ClassList
    from agriseg.models.meta import ModelMeta

#: Encoder of every architecture but SegNet unless ``--encoder`` says otherwise.
DEFAULT_ENCODER = "mobilenet_v2"

#: SegNet's own encoder (it cannot take another: its decoder needs the pooling indices).
SEGNET_ENCODER = "segnet_vgg"


class FCN(nn.Module):
    """Fully convolutional network: torchvision's :class:`FCNHead` on the deepest
    features of a segmentation-models-pytorch encoder, upsampled bilinearly.

    Like torchvision's ``fcn_resnet50`` the encoder is dilated, here to an output
    stride of 16 by default (torchvision's 8 costs about three times as much on a CPU;
    ``encoder_output_stride`` 8, 16 or 32, the undilated FCN-32s).
    """

    def __init__(
        self,
        encoder_name: str = DEFAULT_ENCODER,
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        encoder_output_stride: int = 16,
    ) -> None:
        super().__init__()
        if encoder_weights is not None:
            raise ValueError("agriseg builds encoders without pretrained weights")
        if encoder_output_stride not in (8, 16, 32):
            raise ValueError(f"encoder_output_stride {encoder_output_stride}: expected 8, 16 or 32")
        self.encoder = get_encoder(
            encoder_name, in_channels=in_channels, depth=5, weights=None,
            output_stride=encoder_output_stride,
        )  # fmt: skip
        head = FCNHead(self.encoder.out_channels[-1], classes)
        # FCNHead is a Sequential ending in the classifier: keep its layers, name the
        # classifier like every other architecture's.
        self.decoder = nn.Sequential(*list(head.children())[:-1])
        self.segmentation_head = head[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        logits = self.segmentation_head(self.decoder(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def max_unpool(x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``F.max_unpool2d`` as a scatter: each value goes back to the position its
    maximum came from, zeros elsewhere. The same numbers, but exportable to ONNX
    (``ScatterElements``), which torch's exporter has no ``MaxUnpool`` for."""
    n, c, height, width = size
    out = x.new_zeros((n, c, height * width))
    out = out.scatter(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al., 2017), small: five encoder stages of two 3x3
    convolutions and a 2x2 max pooling whose indices the mirrored decoder stages
    unpool with (no skip features are stored, only indices)."""

    def __init__(
        self,
        encoder_name: str = SEGNET_ENCODER,
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
    ) -> None:
        super().__init__()
        if encoder_name != SEGNET_ENCODER:
            raise ValueError(f"SegNet has its own encoder, {SEGNET_ENCODER!r}")
        if encoder_weights is not None:
            raise ValueError("agriseg builds encoders without pretrained weights")
        widths = list(widths)
        ins = [in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(a, b), _conv_bn_relu(b, b))
            for a, b in zip(ins, widths, strict=True)
        )
        # Decoder stage k undoes encoder stage k: widths[k] -> widths[k - 1] (the first
        # stage keeps its width for the classifier).
        outs = [widths[0], *widths[:-1]]
        self.decoder = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(b, b), _conv_bn_relu(b, a))
            for a, b in zip(outs, widths, strict=True)
        )
        self.segmentation_head = nn.Conv2d(widths[0], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape
            x, indices = F.max_pool2d(x, 2, 2, return_indices=True)
            pooled.append((indices, size))
        for stage, (indices, size) in zip(
            reversed(self.decoder), reversed(pooled), strict=True
        ):  # fmt: skip
            x = stage(max_unpool(x, indices, size))
        return self.segmentation_head(x)


#: Architecture name -> network class; every one takes ``encoder_name``,
#: ``encoder_weights``, ``in_channels``, ``classes`` and its own keyword arguments
#: (``arch_params`` in the metadata). DeepLabV3 runs at output stride 16, the
#: DeepLabV3 paper's training stride, instead of smp's 8, which costs about 3.5x as
#: much (a training step on a CPU: 17 s against 5; ``encoder_output_stride`` in
#: ``arch_params`` chooses).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3": functools.partial(smp.DeepLabV3, encoder_output_stride=16),
    "deeplabv3plus": smp.DeepLabV3Plus,
    "fcn": FCN,
    "fpn": smp.FPN,
    "pspnet": smp.PSPNet,
    "segnet": SegNet,
    "unet": smp.Unet,
}


def check_architecture(name: str) -> Callable[..., nn.Module]:
    """The network class registered as ``name``; :class:`ModelError` listing the valid
    names otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; expected one of {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def default_encoder(architecture: str) -> str:
    """The encoder ``architecture`` is built with when none is given."""
    return SEGNET_ENCODER if architecture == "segnet" else DEFAULT_ENCODER


def build_model(meta: ModelMeta) -> nn.Module:
    """Instantiate the network described by ``meta`` with random weights."""
    factory = check_architecture(meta.architecture)
    kwargs: dict[str, Any] = dict(meta.arch_params)
    return factory(
        encoder_name=meta.encoder,
        encoder_weights=None,
        in_channels=len(meta.bands),
        classes=len(meta.classes),
        **kwargs,
    )


def with_classes(
    model: nn.Module, meta: ModelMeta, classes: ClassList
) -> tuple[nn.Module, ModelMeta]:
    """``model`` predicting ``classes``: same names keep the segmentation head (colours
    and roles may change); other names get a new, randomly initialised head, while the
    encoder and decoder keep their weights (fine-tuning to new classes)."""
    new_meta = dataclasses.replace(meta, classes=classes)
    if [n.lower() for n in classes.names] == [n.lower() for n in meta.classes.names]:
        return model, new_meta
    new = build_model(new_meta)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("segmentation_head.")}
    new.load_state_dict(kept, strict=False)
    return new.train(model.training), new_meta


def parameter_count(model: nn.Module) -> int:
    """Trainable and frozen parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())

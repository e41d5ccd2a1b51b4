"""Optional dependencies: what is installed, and the one-line error when it is not.

``pip install agriseg`` runs models in ONNX Runtime alone; ``pip install
"agriseg[torch]"`` adds PyTorch (training, the torch engine, CUDA) and onnx
(exporting checkpoints). Modules import torch only where they use it and call
:func:`require_torch` first, so a missing PyTorch is a message, not a traceback.
"""

from __future__ import annotations

import importlib.util

from agriseg.errors import InputError, MissingDependencyError

#: How to get PyTorch and the exporter.
TORCH_INSTALL = 'pip install "agriseg[torch]"'


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a stub in sys.modules (None) or a broken package
        return False


def torch_available() -> bool:
    """Whether PyTorch and segmentation-models-pytorch are installed."""
    return installed("torch") and installed("segmentation_models_pytorch")


def exporter_available() -> bool:
    """Whether checkpoints can be exported to ONNX here (PyTorch and onnx)."""
    return torch_available() and installed("onnx")


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime is installed."""
    return installed("onnxruntime")


def require_torch(what: str) -> None:
    """Raise :class:`MissingDependencyError` unless PyTorch is installed.

    ``what`` names what needs it: ``"training"``, ``"--engine torch"``...
    """
    if not torch_available():
        raise MissingDependencyError(f"{what} needs PyTorch: {TORCH_INSTALL}")


def require_exporter(what: str) -> None:
    """Raise :class:`MissingDependencyError` unless checkpoints can be exported to ONNX."""
    if not exporter_available():
        raise MissingDependencyError(f"{what} needs PyTorch and onnx: {TORCH_INSTALL}")


#: The module ``pydensecrf2`` installs.
CRF_MODULE = "pydensecrf"


def crf_available() -> bool:
    """Whether ``pydensecrf2`` is installed."""
    return installed(CRF_MODULE)


def require_crf() -> None:
    """:class:`InputError` saying how to install the CRF when it is missing."""
    if not crf_available():
        raise InputError(
            "--refine crf needs pydensecrf2 (a C++ compiler and Cython build it): "
            "pip install 'agriseg[crf]', or leave out --refine"
        )

"""Models: metadata, the shipped models and checkpoints, architectures, ONNX files and
export, the engines that run a model over tiles (torch, ONNX Runtime) and CRF refinement.

May import the base modules and :mod:`agriseg.io`. Nothing here imports torch at
import time except :mod:`~agriseg.models.architectures` and
:mod:`~agriseg.models.onnx_graph`, which the others import inside the functions that
need them (``tests/test_imports.py``, ``tests/test_torch_free.py``).
"""

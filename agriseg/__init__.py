"""agriseg: crop, weed, diseased-crop and soil maps from orthomosaics."""

from agriseg.classes import CLASS_NAMES, CLASSES, NODATA
from agriseg.errors import AgrisegError

__version__ = "0.1.0"

__all__ = ["CLASSES", "CLASS_NAMES", "NODATA", "AgrisegError", "__version__"]

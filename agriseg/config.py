"""Run options, grouped in one frozen value object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agriseg.products import HealthOptions


@dataclass(frozen=True)
class RunConfig:
    """How to segment a raster.

    Attributes:
        model: shipped model name (``default``, ``agriseg-unet``...) or checkpoint path.
        tile_size: tile edge in pixels; ``None`` uses the model's training tile size.
        overlap: pixels shared by neighbouring tiles, blended smoothly.
        batch_size: tiles per forward pass (and per Dask task).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        bands: 1-based band indexes feeding the model; ``None`` picks by colour
            interpretation.
        assume_crs: CRS to use when the file has none (e.g. ``EPSG:32633``).
        gsd_m: ground sampling distance of the input in metres; ``None``: from the
            file's georeferencing. A plain image's areas come only from it.
        scheduler: address of an existing Dask distributed scheduler.
        workers: start a local cluster of this many worker processes.
        health: how the class raster becomes field-health polygons and statistics.
        threads: intra-op threads of each CPU forward pass, on every worker; ``None``
            runs one single-threaded forward per core at a time. Outputs are
            bit-identical for equal values.
        stream_health: run the field-health pass strip by strip beside the
            segmentation (True) or over the finished rasters (False); ``None``
            streams on CUDA, where the CPU is otherwise idle, and not on CPU, where
            the model already takes every core and the two memory peaks would add up.
            The products are identical either way.
        resample: ``auto`` resamples tiles to a ground sampling distance the model
            knows when the input's is far from the model's (see :mod:`agriseg.scale`);
            ``off`` feeds the input's pixels as they are.
    """

    model: str = "default"
    tile_size: int | None = None
    overlap: int = 64
    batch_size: int = 4
    device: str = "auto"
    bands: tuple[int, ...] | None = None
    assume_crs: str | None = None
    gsd_m: float | None = None
    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    health: HealthOptions = field(default_factory=HealthOptions)
    stream_health: bool | None = None
    resample: Literal["auto", "off"] = "auto"

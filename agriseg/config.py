"""Run options, grouped in one frozen value object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agriseg.errors import InputError
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
        stream_health: run the field-health pass band by band beside the
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

    def __post_init__(self) -> None:
        # Checked here so a bad option fails before the run creates its output folder.
        # The tile size's multiple and the overlap's upper bound depend on the model
        # and are checked when the tiles are planned (also before any output).
        if self.tile_size is not None and self.tile_size < 1:
            raise InputError(
                f"--tile-size {self.tile_size}: expected a positive number of pixels "
                "(or leave it out for the model's own)"
            )
        if self.overlap < 0 or self.overlap % 2:
            raise InputError(f"--overlap {self.overlap}: expected an even number of pixels ≥ 0")
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: expected at least 1 tile")
        if self.workers is not None and self.workers < 1:
            raise InputError(
                f"--workers {self.workers}: expected at least 1 worker process "
                "(or leave it out to run in this process)"
            )
        if self.threads is not None and self.threads < 1:
            raise InputError(
                f"--threads {self.threads}: expected at least 1 thread per forward pass "
                "(or leave it out for one per core)"
            )
        if self.gsd_m is not None and not self.gsd_m > 0:
            raise InputError(f"--gsd {self.gsd_m}: expected a ground distance in metres > 0")

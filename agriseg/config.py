"""Run options, grouped in frozen value objects and checked when they are made.

Nothing heavy is imported here, so building a configuration (the command line does
it first) costs nothing and fails before any output is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agriseg.errors import InputError

#: Architectures ``agriseg train --arch`` offers (the keys of
#: :data:`agriseg.models.architectures.ARCHITECTURES`, named here so that parsing the command
#: line does not import torch).
ARCHITECTURE_NAMES: tuple[str, ...] = (
    "deeplabv3",
    "deeplabv3plus",
    "fcn",
    "fpn",
    "pspnet",
    "segnet",
    "unet",
)

VectorFormat = Literal["geojson", "gpkg", "fgb"]

#: A ``--format`` value: a vector format, or ``auto`` (see :class:`HealthOptions`).
FormatChoice = Literal["auto", "geojson", "gpkg", "fgb"]

#: What runs the model: ``auto`` is ONNX Runtime on CPU when it is installed, else torch.
EngineChoice = Literal["auto", "torch", "onnx"]

#: Post-processing of each tile's probabilities: none, or a dense CRF
#: (:mod:`agriseg.models.refine`).
RefineChoice = Literal["none", "crf"]

#: Valid ``--refine`` values.
REFINEMENTS: tuple[RefineChoice, ...] = ("none", "crf")

#: Valid ``--engine`` values.
ENGINES: tuple[EngineChoice, ...] = ("auto", "torch", "onnx")

#: Numbers ONNX Runtime runs a shipped model in: ``auto`` is int8 where the model
#: ships one for the run's tile size (faster, same held-out mIoU within 0.001), else fp32.
Precision = Literal["auto", "fp32", "int8"]

#: Valid ``--precision`` values.
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "int8")

#: Vector formats ``write_health_products`` can write.
VECTOR_FORMATS: tuple[VectorFormat, ...] = ("geojson", "gpkg", "fgb")

#: Valid ``--format`` values.
FORMAT_CHOICES: tuple[FormatChoice, ...] = ("auto", *VECTOR_FORMATS)

#: How ISOXML task data carries a prescription's rates: ``grid`` (a grid of rates, read
#: by every terminal with TC-GEO) or ``zones`` (polygon treatment zones, optional there).
IsoxmlLayout = Literal["grid", "zones"]

#: Valid ``--isoxml`` values.
ISOXML_LAYOUTS: tuple[IsoxmlLayout, ...] = ("grid", "zones")

#: ``--polygons`` keywords (anything else is a comma-separated list of class names).
POLYGON_KEYWORDS: tuple[str, ...] = ("roles", "all", "none")


@dataclass(frozen=True)
class HealthOptions:
    """How to turn a class raster into field-health products.

    Attributes:
        min_area_m2: Minimum mapping unit: regions smaller than this are merged into
            their largest neighbour before vectorising. The default, 0.01 m²
            (10 × 10 cm), removes speckle (at 1–3 cm resolution, clumps of up to
            100 / 11 px) while keeping a single young weed or diseased plant.
        simplify_m: Simplification tolerance in metres (0: exact pixel edges); None
            (default): exact for surveys of up to ``LARGE_SURVEY_PX`` pixels, one pixel
            above (see :mod:`agriseg.health.products`).
        formats: Vector files to write (``geojson``, ``gpkg``, ``fgb``); ``auto``
            (default) is the GeoPackage plus GeoJSON for a small survey.
        polygons: Which classes become polygons: ``roles`` (default: the classes whose
            role is weed or disease), ``all``, ``none`` or class names separated by
            commas. Every class still gets its areas and statistics.
        whole_regions: Join background and crop regions across the health pass's
            cells of ``pane_size`` px too (else they are cut on that grid, so none
            outgrows a cell).
        fields: Field-boundary polygons for per-field statistics, or None.
        grid_m: Management-zone cell size in metres, or None for no grid.
        preview: Whether to draw ``<stem>.preview.png``.
        pane_size: Edge of the processing panes in pixels (memory grows with its square).
        workers: Processes sieving and polygonising panes in parallel when the run has
            no Dask cluster of worker processes; None: one per core for rasters of at
            least 8 Mpx, else 1; 1: all in the calling process.
    """

    min_area_m2: float = 0.01
    simplify_m: float | None = None
    formats: tuple[FormatChoice, ...] = ("auto",)
    polygons: str = "roles"
    whole_regions: bool = False
    fields: Path | None = None
    grid_m: float | None = None
    preview: bool = True
    pane_size: int = 2048
    workers: int | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMAT_CHOICES]
        if unknown:
            raise InputError(
                f"unknown --format {', '.join(map(str, unknown))}; "
                f"expected one or more of {', '.join(FORMAT_CHOICES)}"
            )
        if not self.polygons.strip(" ,"):
            raise InputError(
                f"--polygons {self.polygons!r}: expected {', '.join(POLYGON_KEYWORDS)} "
                "or class names separated by commas"
            )
        if self.min_area_m2 < 0:
            raise InputError(f"--min-area {self.min_area_m2}: expected an area ≥ 0 m²")
        if self.simplify_m is not None and self.simplify_m < 0:
            raise InputError(f"--simplify {self.simplify_m}: expected a distance ≥ 0 m")
        if self.grid_m is not None and not self.grid_m > 0:
            raise InputError(f"--grid {self.grid_m}: expected a cell size > 0 m")
        if self.grid_m is not None and not self.writes_gpkg:
            raise InputError("--grid writes a GeoPackage layer `zones`; add gpkg to --format")
        if self.pane_size < 16:
            raise InputError(f"pane size {self.pane_size}: expected at least 16 px")
        if self.workers is not None and self.workers < 1:
            raise InputError(
                f"--health-workers {self.workers}: expected at least 1 process "
                "(or leave it out for one per core)"
            )

    @property
    def writes_gpkg(self) -> bool:
        """Whether ``<stem>.health.gpkg`` is among the outputs (``auto`` always has it)."""
        return "gpkg" in self.formats or "auto" in self.formats


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
            segmentation (True, and ``None``) or over the finished rasters (False,
            which needs less memory: the two peaks do not add up). The products are
            identical either way.
        resample: ``auto`` resamples tiles to a ground sampling distance the model
            knows when the input's is far from the model's (see
            :mod:`agriseg.segmentation.scale`); ``off`` feeds the input's pixels as they
            are; a number is the GSD in metres to resample to.
        engine: what runs the model: ``torch``, ``onnx`` (ONNX Runtime, CPU only) or
            ``auto`` (ONNX Runtime on CPU when installed, torch otherwise). Class
            rasters of the two agree on all but a few pixels near class boundaries.
        precision: the numbers ONNX Runtime runs a shipped model in: ``int8`` (its
            shipped int8 variant: faster; class rasters agree with fp32's on ~99.6 % of
            pixels), ``fp32`` (agrees with torch on ≥ 99.9 %) or ``auto`` (int8 where the
            model ships it for the run's tile size). The torch engine runs fp32.
        tta: test-time augmentation: average each tile's class probabilities over its
            eight D4 views (rotations by 90°, mirrored), inside the tiling, so blending
            and memory are unchanged; eight forward passes per tile.
        refine: ``crf``: refine each tile's probabilities with a dense CRF on its
            pixels (after ``tta``), inside the tiling (see :mod:`agriseg.models.refine`);
            needs the ``crf`` extra.
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
    resample: Literal["auto", "off"] | float = "auto"
    engine: EngineChoice = "auto"
    precision: Precision = "auto"
    tta: bool = False
    refine: RefineChoice = "none"

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
        if self.engine not in ENGINES:
            raise InputError(f"--engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}"
            )
        if self.refine not in REFINEMENTS:
            raise InputError(f"--refine {self.refine!r}: expected one of {', '.join(REFINEMENTS)}")
        if self.refine == "crf":
            from agriseg.optional import require_crf

            require_crf()

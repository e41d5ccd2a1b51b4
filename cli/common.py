"""Helpers shared by the command modules: option parsing, progress bars, tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from agriseg.config import FORMAT_CHOICES, ISOXML_LAYOUTS, REFINEMENTS, HealthOptions
from agriseg.errors import InputError

if TYPE_CHECKING:
    from agriseg.field.plants import PlantOptions, PlantResult
    from agriseg.field.prescriptions import PrescriptionOptions, PrescriptionResult


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` text showing every option's default, unless its help already says it.

    Options whose default is ``None`` say in their help what leaving them out means
    (``tests/test_cli_help.py`` checks that every option does one or the other).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text.lower()
            or action.default is None
            or action.default is False
            or action.default in ("", argparse.SUPPRESS)
            or text == argparse.SUPPRESS
        ):
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def deprecated_alias(old: str, new: str) -> type[argparse.Action]:
    """An action for a renamed option: stores under the new name and warns on stderr."""

    class Alias(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            print(f"{parser.prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    return Alias


#: Exit statuses of every command (``batch`` adds 1: some surveys failed).
EXIT_ERROR = 2  # an AgrisegError: bad input, options or output folder (or bad arguments)
EXIT_INTERNAL = 3  # an exception agriseg did not expect: a bug
EXIT_INTERRUPTED = 130  # Ctrl-C

#: The exit statuses, for a command's ``--help``.
EXIT_STATUS = (
    f"Exit status: 0 done; {EXIT_ERROR} bad input, options or output folder (one line on "
    f"stderr saying what to fix); {EXIT_INTERNAL} internal error (a bug: rerun with --debug "
    f"and report it); {EXIT_INTERRUPTED} interrupted (Ctrl-C)."
)


def band_list(text: str) -> tuple[int, ...]:
    """``"3,2,1"`` → ``(3, 2, 1)`` for ``--bands``."""
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of 1-based band numbers, e.g. 1,2,3"
        ) from None
    if any(b < 1 for b in bands):
        raise argparse.ArgumentTypeError(f"{text!r}: band numbers start at 1")
    return bands


def band_name_list(text: str) -> tuple[str, ...]:
    """``"red,green,blue,nir"`` → ``("red", "green", "blue", "nir")`` for ``--band-names``."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of band names, e.g. red,green,blue,nir"
        )
    return names


#: RunConfig fields set by the option of the same name of :func:`add_model_options`.
MODEL_OPTIONS = (
    "model",
    "tile_size",
    "overlap",
    "batch_size",
    "device",
    "bands",
    "assume_crs",
    "scheduler",
    "workers",
    "threads",
    "resample",
    "engine",
    "precision",
    "tta",
    "refine",
)


def add_segmentation_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run``, ``batch`` and ``bench``: those of
    :func:`add_model_options` and how the health pass runs beside the segmentation."""
    add_model_options(parser)
    parser.add_argument(
        "--stream-health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "vectorise strip by strip while segmenting (default), or after it with "
            "--no-stream-health (less memory); the outputs are the same"
        ),
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """What makes the class raster (``run``, ``batch``, ``bench``, ``evaluate``): model,
    tiling, device, engine, cluster (:data:`MODEL_OPTIONS`, ``--gsd``)."""
    parser.add_argument(
        "--model",
        default="default",
        help="shipped model name, model folder or checkpoint path",
    )
    parser.add_argument(
        "--tile-size", type=int, default=None, help="tile edge in pixels (default: the model's)"
    )
    parser.add_argument(
        "--overlap", type=int, default=64, help="pixels shared by neighbouring tiles (default 64)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="tiles per forward pass (default 4)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average each tile over its 8 rotations and mirror "
        "images (8x the model's work)",
    )
    parser.add_argument(
        "--refine",
        choices=REFINEMENTS,
        default="none",
        help="crf: refine each tile's class probabilities with a dense CRF on its pixels "
        "(needs pip install 'agriseg[crf]'; default none)",
    )
    parser.add_argument(
        "--engine",
        default="auto",
        help="what runs the model: torch, onnx (ONNX Runtime, CPU) or auto: ONNX Runtime "
        "on CPU when installed, else torch (default auto)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        help="numbers ONNX Runtime runs a shipped model in: int8 (faster), fp32 (agrees "
        "with torch on >= 99.9%% of pixels) or auto: int8 where shipped (default auto)",
    )
    parser.add_argument(
        "--bands",
        type=band_list,
        default=None,
        help="1-based bands feeding the model, e.g. 3,2,1 "
        "(default: matched to the model's bands by name)",
    )
    parser.add_argument(
        "--assume-crs",
        default=None,
        help="CRS for rasters that lack one, e.g. EPSG:32633 (a file's own CRS wins, with "
        "a warning; a plain photo without a geotransform cannot take one; default: none)",
    )
    parser.add_argument(
        "--gsd",
        type=float,
        default=None,
        help="ground sampling distance of the input in metres (default: from the file's georeferencing)",  # noqa: E501
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (default: DASK_SCHEDULER_ADDRESS, else none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="start a local Dask cluster with N worker processes (default: run in this process)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=(
            "CPU threads per forward pass on every worker (default 1: one forward per "
            "core at a time); outputs are bit-identical for equal values"
        ),
    )
    parser.add_argument(
        "--resample",
        choices=("auto", "off"),
        default="auto",
        help=(
            "auto: resample tiles to a ground sampling distance the model knows when the "
            "input's is far from it; off: use the input's pixels as they are (default auto)"
        ),
    )


def add_label_options(parser: argparse.ArgumentParser) -> None:
    """How labels are read, for ``train`` and ``evaluate``."""
    parser.add_argument(
        "--label-column", default="class", help="attribute of vector labels naming the class"
    )
    parser.add_argument(
        "--label-layer",
        default=None,
        help="layer of vector labels (default: the file's only polygon layer)",
    )
    parser.add_argument(
        "--label-colors",
        default=None,
        help="colours of colour-coded masks, e.g. 'crop=#00ff00,weed=#ff0000,soil=#000000' "
        "(other colours: unlabelled; default: masks hold class ids)",
    )


def add_health_options(parser: argparse.ArgumentParser) -> None:
    """Options for the field-health products: polygons, statistics, zones, preview."""
    parser.add_argument(
        "--min-area",
        type=float,
        default=HealthOptions.min_area_m2,
        help="minimum mapping unit in m²: smaller specks merge into their neighbours "
        f"(default {HealthOptions.min_area_m2})",
    )
    parser.add_argument(
        "--simplify",
        type=float,
        default=None,
        metavar="METRES",
        help="simplify polygon edges by this many metres (default: exact pixel edges up to "
        "25 Mpx, one pixel above; 0: always exact)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        choices=FORMAT_CHOICES,
        action="append",
        default=None,
        help="vector output format; repeat for several (default auto: gpkg, plus geojson "
        "up to 25 Mpx; fgb: FlatGeobuf with a spatial index, for large surveys)",
    )
    parser.add_argument(
        "--polygons",
        default=HealthOptions.polygons,
        metavar="roles|all|none|CLASS,...",
        help="classes that become polygons (default roles: the weed and disease classes); "
        "every class still gets its areas and statistics",
    )
    parser.add_argument(
        "--whole-regions",
        action="store_true",
        help="join background and crop regions across the 2048-px cells they are cut on "
        "(a field-wide soil region becomes one polygon with a hole per plant)",
    )
    parser.add_argument(
        "--health-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes sieving and polygonising in parallel (default: one per core the "
        "model leaves free, for rasters of 8 Mpx or more; on a Dask cluster its workers "
        "do it)",
    )
    parser.add_argument(
        "--fields",
        type=Path,
        default=None,
        help="field boundaries for per-field statistics (default: none)",
    )
    parser.add_argument(
        "--grid",
        type=float,
        default=None,
        metavar="SIZE_M",
        help="management-zone grid of SIZE_M metre cells (a gpkg layer; default: none)",
    )
    parser.add_argument("--no-preview", action="store_true", help="do not draw <stem>.preview.png")


def health_options_from_args(args: argparse.Namespace) -> HealthOptions:
    return HealthOptions(
        min_area_m2=args.min_area,
        simplify_m=args.simplify,
        formats=tuple(args.formats) if args.formats else HealthOptions.formats,
        polygons=args.polygons,
        whole_regions=args.whole_regions,
        workers=args.health_workers,
        fields=args.fields,
        grid_m=args.grid,
        preview=not args.no_preview,
    )


#: Seconds of progress before a bar is first drawn.
PROGRESS_DELAY_S = 0.5


@contextmanager
def progress_bar(
    desc: str, quiet: bool, unit: str = "tile"
) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a bar on stderr (nothing when quiet)."""
    if quiet:
        yield lambda done, total: None
        return
    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        # The bar is made on the first report, when the total is known, and drawn only
        # after PROGRESS_DELAY_S of progress, when the rate is known too: no
        # "0tile [00:00, ?tile/s]" line, and quick steps draw nothing.
        if not bars:
            bars.append(
                tqdm(
                    desc=desc,
                    total=total,
                    initial=done,
                    unit=unit,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    leave=False,
                    delay=PROGRESS_DELAY_S,
                )
            )
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        if done != bar.n:
            bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A small aligned text table on stdout (first column left, the rest right)."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        padded = [c.rjust(widths[k]) if k else c.ljust(widths[0]) for k, c in enumerate(row)]
        print("  ".join(padded).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def verdict_line(summary: dict[str, Any]) -> str:
    """The run's reliability verdict as it leads the summary line (``UNRELIABLE (...)``)."""
    from agriseg.health.verdict import Reliability

    data = summary.get("reliability")
    return "UNCHECKED" if data is None else Reliability.from_json(data).headline()


def add_force_option(parser: argparse.ArgumentParser, flag: str = "--force") -> None:
    """The option that lets plant counts and prescriptions act on an unreliable map."""
    parser.add_argument(
        flag,
        dest="force_unreliable",
        action="store_true",
        help="count plants / prescribe even from a map judged UNRELIABLE, or with rows "
        "closer than the imagery resolves (the override is recorded in the outputs)",
    )


def print_health_table(health: dict[str, Any], verdict: str = "") -> None:
    """The closing table of a run: class areas and the field-health indices, the
    summary line led by the run's ``verdict`` (:func:`verdict_line`)."""
    rows: list[tuple[Any, ...]] = [
        (name, c.get("role", ""), c["area_m2"], f"{c['area_ha']:.4f}", _percent(c["share"]))
        for name, c in health["classes"].items()
    ]
    rows.append(("total", "", health["valid_area_m2"], f"{health['valid_area_ha']:.4f}", ""))
    print_table(("class", "role", "area m²", "ha", "share"), rows)
    score = health["health_score"]
    print(
        (f"{verdict}  " if verdict else "")
        + f"vegetation cover {_percent(health['vegetation_cover'])}  "
        f"weed pressure {_percent(health['weed_pressure'])}  "
        f"disease incidence {_percent(health['disease_incidence'])}  "
        f"health score {'n/a' if score is None else f'{score:.0f}/100'}"
    )
    indices = {k: v for k, v in health.get("vegetation_indices", {}).items() if v is not None}
    if indices:
        print("mean " + "  ".join(f"{name.upper()} {value:.3f}" for name, value in indices.items()))


def add_prescription_options(parser: argparse.ArgumentParser, after_run: bool = False) -> None:
    """Options of ``prescribe``; with ``after_run``, for ``run``/``batch`` (off unless asked)."""
    group = parser.add_argument_group("prescriptions (to the sprayer)")
    if after_run:
        group.add_argument(
            "--prescribe",
            action="store_true",
            help="also write spot-spray prescriptions (implied by --rates/--rate)",
        )
    rates = group.add_mutually_exclusive_group()
    rates.add_argument(
        "--rates",
        type=Path,
        default=None,
        help="rate table for the zones, one rule a line, e.g. 'weed_pressure >= 0.10: 1.5 l/ha' "
        "and a closing 'otherwise: 0 l/ha' (for a run with --grid, or with --fields; default: "
        "spot spraying only)",
    )
    rates.add_argument(
        "--rate",
        action="append",
        default=None,
        metavar="RULE",
        help="a rate-table rule on the command line; repeat, in order, ending with "
        "'otherwise: RATE UNIT' (default: none)",
    )
    if not after_run:  # run and batch have --fields already
        group.add_argument(
            "--fields",
            type=Path,
            default=None,
            help="rate these fields (the file the run got as --fields) instead of its --grid zones "
            "(default: the zones)",
        )
    group.add_argument(
        "--buffer",
        type=float,
        default=0.5,
        help="margin sprayed around each weed patch, metres (default 0.5)",
    )
    group.add_argument(
        "--min-section",
        type=float,
        default=0.5,
        help="smallest area the sprayer treats, m²: smaller holes are sprayed over, smaller "
        "patches grown to it (default 0.5)",
    )
    group.add_argument(
        "--spot-rate",
        type=float,
        default=2.0,
        help="rate on the weed patches, in the rate table's unit (default 2.0; l/ha without one)",
    )
    group.add_argument(
        "--isoxml",
        choices=ISOXML_LAYOUTS,
        default="grid",
        help="how the ISOXML task data carries the rates: grid (a rate per grid cell, read "
        "by every terminal with TC-GEO) or zones (polygons, optional on terminals; "
        "default grid)",
    )
    group.add_argument(
        "--cell",
        type=float,
        default=None,
        metavar="M",
        help="cell edge of the ISOXML grid, metres (default: the --grid zones' own; "
        "1 m for spot spraying, 5 m for --fields)",
    )
    for name, what in (
        ("customer", "customer"),
        ("farm", "farm"),
        ("field", "field (partfield) the terminal lists the tasks under; default: the survey's"),
        ("product", "product applied"),
    ):
        group.add_argument(
            f"--{name}",
            default=None,
            metavar="NAME",
            help=f"name of the {what} (wins over the rate table's '{name}:' line)"
            + ("" if "default" in what else " (default: the table's, else none)"),
        )


def prescription_options_from_args(args: argparse.Namespace) -> PrescriptionOptions | None:
    """The prescription options, or ``None`` when ``run``/``batch`` were not asked for any."""
    from agriseg.field.prescriptions import PrescriptionOptions, parse_rate_table, read_rate_table
    from agriseg.field.taskdata import TaskNames

    if not (getattr(args, "prescribe", True) or args.rates or args.rate):
        return None
    after_run = hasattr(args, "grid")
    if after_run and args.grid is None and args.fields is None and (args.rates or args.rate):
        raise InputError(
            "--rates/--rate give each management zone a rate, and there are none without "
            "--grid or --fields: add --grid SIZE_M (e.g. --grid 10) or --fields FILE"
        )
    if after_run and args.polygons.strip().lower() == "none":
        raise InputError(
            "prescriptions are drawn from the weed polygons, which --polygons none leaves "
            "out: drop --polygons none (the default makes weed and disease polygons)"
        )
    if after_run and args.formats and not {"gpkg", "auto"} & set(args.formats):
        raise InputError(
            "prescriptions are drawn from the weed polygons of <stem>.health.gpkg, which "
            "--format leaves out: add --format gpkg"
        )
    rates = None
    if args.rates is not None:
        rates = read_rate_table(args.rates)
    elif args.rate:
        rates = parse_rate_table(args.rate, "--rate", line_numbers=False)
    return PrescriptionOptions(
        buffer_m=args.buffer,
        min_section_m2=args.min_section,
        spot_rate=args.spot_rate,
        rates=rates,
        # after a run, its fields are rated when it has no grid
        fields=args.fields if not after_run or args.grid is None else None,
        isoxml=args.isoxml,
        cell_m=args.cell,
        names=TaskNames(args.customer, args.farm, args.field, args.product),
    )


def print_prescriptions(results: Sequence[PrescriptionResult], quiet: bool = False) -> None:
    """One row per prescription and its files (unless ``quiet``), then any warning on
    stderr (always)."""
    if not quiet:
        rows = []
        for r in results:
            zones = ", ".join(f"{n} at {rate:g}" for rate, n in sorted(r.zone_rates.items()))
            share = f"{r.spot_share:.0%}"
            rows.append((r.stem, r.spot_sections, r.spot_area_m2, share, zones or "-"))
        print_table(("input", "spray sections", "spray area m²", "of surveyed", "zones"), rows)
        for r in results:
            for path in r.outputs.values():
                print(path)
    for r in results:
        for line in r.warnings:
            print(f"warning: {line}", file=sys.stderr)


def add_plant_options(parser: argparse.ArgumentParser) -> None:
    """``--plants`` on run and batch: count the plants after the run (see ``agriseg plants``)."""
    parser.add_argument(
        "--plants",
        action="store_true",
        help="also count the crop plants: <stem>.plants.gpkg and <stem>.plants.json "
        "(per --fields field and --grid zone)",
    )


def plant_options_from_args(args: argparse.Namespace) -> PlantOptions | None:
    if not getattr(args, "plants", False):
        return None
    from agriseg.field.plants import PlantOptions

    return PlantOptions(fields=args.fields, grid_m=args.grid)


def print_plant_counts(results: Sequence[PlantResult]) -> None:
    rows = []
    for r in results:
        count, lattice = r.count, r.count.rows
        density = len(count.plants) / count.area_m2 if count.area_m2 else None
        rows.append(
            (
                r.stem,
                len(count.plants),
                None if density is None else round(density, 2),
                len(count.missing),
                None if lattice is None else round(lattice.row_spacing * lattice.gsd_m, 3),
                None if lattice is None else round(lattice.plant_spacing * lattice.gsd_m, 3),
            )
        )
    print_table(("survey", "plants", "plants/m²", "missing", "row m", "plant m"), rows)
    for r in results:
        print(f"plants in {r.gpkg} and {r.json}")

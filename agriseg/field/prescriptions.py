"""Prescriptions for the sprayer: spot-spray polygons and zone rates from a finished run.

A run's weed polygons (``<stem>.health.gpkg`` layer ``health``) are buffered by a
safety margin, merged into spray sections and given the spot rate; its management
zones (layer ``zones``, from ``agriseg run --grid``) get a rate from a
:class:`RateTable`, a plain-text file an agronomist can read::

    # herbicide by weed pressure, first matching line wins
    product: Herbicide X
    weed_pressure >= 30%: 2.0 l/ha
    weed_pressure >= 0.10: 1.5 l/ha
    otherwise: 0 l/ha

Sections and zones are clipped to the surveyed area (the class raster's valid pixels);
grid-cell slivers at the survey's edge join a neighbouring zone. Both prescriptions are
written as a zipped ESRI Shapefile in WGS84 (most terminals and farm software), as
ISO 11783-10 task data (:mod:`agriseg.field.taskdata`, zipped, for ISOBUS task controllers)
and as a GeoPackage styled by rate for QGIS.
"""

from __future__ import annotations

import json
import math
import operator
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from agriseg.classes import ClassList
from agriseg.config import ISOXML_LAYOUTS, IsoxmlLayout
from agriseg.errors import InputError
from agriseg.field.footprint import SurveyedArea, surveyed_area
from agriseg.field.taskdata import RATE_UNITS, WGS84, TaskNames, build_taskdata
from agriseg.health.qgis import WEED_PRESSURE_RANGES, graduated_qml, write_layer_styles
from agriseg.health.zones import grid_crs, join_slivers, read_fields
from agriseg.io.atomic import OutputTransaction, output_folder, output_transaction
from agriseg.io.geopackage import write_layer
from agriseg.io.ownership import PRESCRIPTION_KINDS, check_free, record_outputs, summary_path
from agriseg.io.raster import GEOREFERENCE_FIX

#: Rate units of the rate tables (see :data:`agriseg.field.taskdata.RATE_UNITS`).
Unit = Literal["l/ha", "kg/ha"]

#: Zone statistics that are shares from 0 to 1 (besides every ``<class>_share``).
SHARE_STATISTICS = ("weed_pressure", "disease_incidence", "vegetation_cover")

#: Spot spraying sections covering more than this share of the surveyed area spray
#: nearly everything: the prescription says so (the saving over a blanket spray is gone).
SPOT_WARN_SHARE = 0.5

#: Task-data grid cell, metres, where no --cell is given: spot spraying and fields
#: (grid zones use their own cell size).
SPOT_CELL_M = 1.0
FIELD_CELL_M = 5.0

#: Layers of ``<stem>.prescription.gpkg``.
ZONE_LAYER = "prescription"
SPOT_LAYER = "spot"

#: What ``prescribe`` writes for input ``<stem>``: ``<stem>`` + suffix, by kind.
PRESCRIPTION_SUFFIXES = {
    "gpkg": ".prescription.gpkg",
    "spot_shp": ".spot.shp.zip",
    "zones_shp": ".zones.shp.zip",
    "taskdata": ".taskdata.zip",
    "summary": ".prescription.json",
}

RULE_EXAMPLE = "write rules as 'weed_pressure >= 0.10: 1.5 l/ha' and end with 'otherwise: 0 l/ha'"

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_RATE = rf"(?P<rate>-?(?:{_NUMBER}))\s*(?P<unit>\S+)"
_RULE = re.compile(
    rf"^(?P<stat>[A-Za-z_][A-Za-z0-9_\-]*)\s*(?P<op>>=|<=|>|<)\s*"
    rf"(?P<threshold>-?(?:{_NUMBER}))\s*(?P<percent>%?)\s*:\s*{_RATE}$"
)
_OTHERWISE = re.compile(rf"^otherwise\s*:\s*{_RATE}$", re.IGNORECASE)
#: Name lines of a rate table (``product: Herbicide X``), see :class:`TaskNames`.
_NAME = re.compile(r"^(?P<what>product|customer|farm|field)\s*:\s*(?P<name>\S.*)$", re.IGNORECASE)
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class RateRule:
    """One line of a rate table: zones whose ``statistic`` ``op`` ``threshold`` get ``rate``.

    ``statistic`` is ``None`` for the closing ``otherwise`` line, which matches every zone.
    """

    statistic: str | None
    op: str
    threshold: float
    rate: float
    where: str  # "FILE:LINE", for messages


@dataclass(frozen=True)
class RateTable:
    """Rules tried top to bottom; a zone gets the rate of the first rule it matches.

    ``names`` are the table's ``product:``, ``customer:``, ``farm:`` and ``field:`` lines.
    """

    rules: tuple[RateRule, ...]
    unit: Unit
    source: str
    names: TaskNames = TaskNames()

    @property
    def product(self) -> str | None:
        return self.names.product

    @property
    def statistics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.statistic for r in self.rules if r.statistic is not None))

    def rates(self, zones: gpd.GeoDataFrame) -> np.ndarray:
        """The rate of each zone (row of ``zones``, which has the statistics as columns)."""
        have = [
            str(c)
            for c in zones.columns
            if c not in ("zone_id", "row", "col") and pd.api.types.is_numeric_dtype(zones[c])
        ]
        for rule in self.rules:
            if rule.statistic is not None and rule.statistic not in have:
                raise InputError(
                    f"{rule.where}: unknown zone statistic {rule.statistic!r}; use one of "
                    f"{', '.join(have)}"
                )
        rates = np.full(len(zones), np.nan)
        for rule in self.rules:
            if rule.statistic is None:
                match = np.ones(len(zones), dtype=bool)
            else:
                values = zones[rule.statistic].to_numpy(dtype="float64")
                match = _OPERATORS[rule.op](values, rule.threshold)
            take = np.isnan(rates) & match
            rates[take] = rule.rate
        return rates


def _rule_error(where: str, problem: str, fix: str = RULE_EXAMPLE) -> InputError:
    return InputError(f"{where}: {problem}; {fix}")


def parse_rate_table(lines: Sequence[str], source: str, line_numbers: bool = True) -> RateTable:
    """Parse rate rules (one per line; ``#`` starts a comment; blank lines are skipped)
    and optional ``product:``, ``customer:``, ``farm:`` and ``field:`` name lines.

    A share (``weed_pressure``, ``<class>_share``...) runs from 0 to 1: a threshold above
    1 is refused, with its spelling as a percentage and as a share.

    Args:
        lines: The table's lines.
        source: Where they come from, for messages (a file name, ``--rate``).
        line_numbers: Name lines ``SOURCE:N`` (a file) rather than ``SOURCE #N`` (options).

    Raises:
        InputError: ``SOURCE:LINE: what is wrong; how to fix it`` for the first bad line.
    """
    rules: list[RateRule] = []
    unit: str | None = None
    unit_where = ""
    last = source
    names: dict[str, tuple[str, str]] = {}  # what -> (name, where)
    for n, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{source}:{n}" if line_numbers else f"{source} #{n}"
        named = _NAME.match(text)
        if named is not None:
            what = named["what"].lower()
            if what in names:
                raise _rule_error(
                    where,
                    f"a second {what} line (the first is {names[what][1]})",
                    f"give one {what} per table",
                )
            names[what] = (named["name"].strip(), where)
            continue
        last = where
        if rules and rules[-1].statistic is None:
            raise _rule_error(
                where,
                f"{text!r} comes after the 'otherwise' line ({rules[-1].where}) so it is never "
                "used",
                "move 'otherwise' to the end",
            )
        match = _RULE.match(text) or _OTHERWISE.match(text)
        if match is None:
            raise _rule_error(where, f"cannot read {text!r}")
        groups = match.groupdict()
        if groups["unit"] not in RATE_UNITS:
            raise _rule_error(
                where,
                f"unknown unit {groups['unit']!r}",
                f"use one of {', '.join(RATE_UNITS)} (e.g. '1.5 l/ha')",
            )
        if unit is None:
            unit, unit_where = groups["unit"], where
        elif groups["unit"] != unit:
            raise _rule_error(
                where,
                f"unit {groups['unit']} differs from {unit} on {unit_where}",
                "use one unit in a table (one product per prescription)",
            )
        rate = float(groups["rate"])
        if rate < 0:
            raise _rule_error(where, f"negative rate {groups['rate']}", "give a rate of 0 or more")
        statistic = groups.get("stat")
        threshold = float(groups.get("threshold") or 0.0)
        if groups.get("percent"):
            threshold /= 100
        elif statistic is not None and _is_share(statistic) and abs(threshold) > 1:
            op = groups["op"]
            raise _rule_error(
                where,
                f"{statistic} is a share from 0 to 1, so '{op} {groups['threshold']}' never "
                "decides",
                f"write '{op} {groups['threshold']}%' or '{op} {threshold / 100:g}'",
            )
        rules.append(RateRule(statistic, groups.get("op") or "", threshold, rate, where))
    if not rules:
        raise _rule_error(source, "no rate rules")
    if rules[-1].statistic is not None:
        raise _rule_error(
            last,
            "the table has no 'otherwise' line, so zones that match no rule would get no rate",
            f"end it with 'otherwise: 0 {unit}'",
        )
    try:
        task_names = TaskNames(**{what: name for what, (name, _) in names.items()})
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    return RateTable(tuple(rules), cast(Unit, unit), source, task_names)


def _is_share(statistic: str) -> bool:
    return statistic in SHARE_STATISTICS or statistic.endswith("_share")


def read_rate_table(path: Path) -> RateTable:
    """Read a rate table file (see :func:`parse_rate_table`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(
            f"{path}: cannot read the rate table ({reason}); give a text file of rules such as "
            "'weed_pressure >= 0.10: 1.5 l/ha'"
        ) from None
    return parse_rate_table(text.splitlines(), str(path))


@dataclass(frozen=True)
class PrescriptionOptions:
    """How spot-spray sections are drawn and what they get.

    Attributes:
        buffer_m: Margin around each weed polygon, in metres (GNSS error, drift).
        min_section_m2: Holes smaller than this are sprayed over; sections smaller
            than this are grown to it (a sprayer cannot switch on for less).
        spot_rate: Rate inside the spray sections, in the rate table's unit.
        unit: Unit of ``spot_rate`` when there is no rate table.
        rates: Zone rates, or ``None`` for the spot-spray prescription alone.
        fields: Field boundaries (the file the run got as ``--fields``) to rate
            instead of the run's grid cells.
        isoxml: How the task data carries the rates: ``grid`` or ``zones`` (polygons).
        cell_m: Task-data grid cell, metres (default: the zones' own cells, else
            :data:`SPOT_CELL_M` and :data:`FIELD_CELL_M`).
        names: Customer, farm, field and product names; they win over the rate
            table's.
    """

    buffer_m: float = 0.5
    min_section_m2: float = 0.5
    spot_rate: float = 2.0
    unit: Unit = "l/ha"
    rates: RateTable | None = None
    fields: Path | None = None
    isoxml: IsoxmlLayout = "grid"
    cell_m: float | None = None
    names: TaskNames = TaskNames()

    def __post_init__(self) -> None:
        for name, value in (
            ("--buffer", self.buffer_m),
            ("--min-section", self.min_section_m2),
            ("--spot-rate", self.spot_rate),
        ):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} {value}: must be a number of 0 or more")
        if self.cell_m is not None and not (math.isfinite(self.cell_m) and self.cell_m > 0):
            raise InputError(f"--cell {self.cell_m}: must be a positive number of metres")
        if self.isoxml not in ISOXML_LAYOUTS:
            raise InputError(f"--isoxml {self.isoxml!r}: use one of {', '.join(ISOXML_LAYOUTS)}")

    @property
    def task_names(self) -> TaskNames:
        """The names for the task data: the command line's, then the rate table's."""
        return self.names.over(self.rates.names) if self.rates is not None else self.names

    @property
    def rate_unit(self) -> Unit:
        return self.rates.unit if self.rates is not None else self.unit


def _fill_small_holes(polygon: shapely.Polygon, min_area: float) -> shapely.Polygon:
    holes = [h for h in polygon.interiors if shapely.Polygon(h).area >= min_area]
    return shapely.Polygon(polygon.exterior, holes)


def spray_sections(weeds: np.ndarray, buffer_m: float, min_section_m2: float) -> np.ndarray:
    """Spray sections covering every weed polygon (in a metric CRS) with a ``buffer_m`` margin.

    The buffered polygons are merged; holes below ``min_section_m2`` are filled and
    sections below it grown to it, so no weed is left out.
    """
    if len(weeds) == 0:
        return np.empty(0, dtype=object)
    grown = shapely.buffer(weeds, buffer_m, quad_segs=4) if buffer_m > 0 else weeds
    parts = shapely.get_parts(shapely.union_all(grown))
    small = shapely.area(parts) < min_section_m2
    if small.any():
        # the buffer's round ends are 16-gons, of area 8 r² sin(π/8) (not π r²)
        radius = math.sqrt(min_section_m2 / (8 * math.sin(math.pi / 8)))
        parts[small] = shapely.buffer(parts[small], radius, quad_segs=4)
        parts = shapely.get_parts(shapely.union_all(parts))
    parts = parts[shapely.get_type_id(parts) == 3]  # polygons only (no stray lines)
    return np.array([_fill_small_holes(p, min_section_m2) for p in parts], dtype=object)


@dataclass(frozen=True)
class RunOutputs:
    """What a finished run left in its folder for input ``stem``."""

    run_dir: Path
    stem: str
    summary: dict[str, Any]

    @property
    def gpkg(self) -> Path:
        return self.run_dir / f"{self.stem}.health.gpkg"

    @property
    def classes_path(self) -> Path:
        return self.run_dir / f"{self.stem}.classes.tif"

    @property
    def summary_path(self) -> Path:
        return self.run_dir / f"{self.stem}.summary.json"

    @property
    def weed_classes(self) -> tuple[str, ...]:
        classes = self.summary.get("model", {}).get("classes", [])
        return tuple(c["name"] for c in classes if c.get("role") == "weed")


def find_runs(run_dir: Path) -> list[RunOutputs]:
    """Every run in ``run_dir`` or its subfolders (one per ``<stem>.summary.json``: an
    ``agriseg batch`` folder holds one subfolder per survey)."""
    fix = "give the --out folder of a finished agriseg run or batch"
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such folder; {fix}")
    runs = []
    for path in sorted([*run_dir.glob("*.summary.json"), *run_dir.glob("*/*.summary.json")]):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable run summary ({exc}); rerun agriseg run") from None
        runs.append(RunOutputs(path.parent, path.name.removesuffix(".summary.json"), summary))
    if not runs:
        raise InputError(f"{run_dir}: no <stem>.summary.json here; {fix}")
    return runs


def _read_layer(run: RunOutputs, layer: str) -> gpd.GeoDataFrame | None:
    if run.summary.get("input", {"crs": ""}).get("crs") is None:
        raise InputError(
            f"{run.summary_path}: the run was in pixel mode (its input has no CRS), so it "
            f"has no map to spray by; {GEOREFERENCE_FIX}"
        )
    if not run.gpkg.is_file():
        raise InputError(
            f"{run.gpkg}: missing, so there are no weed polygons to prescribe from; rerun "
            "agriseg run with --format gpkg (the default)"
        )
    if layer not in [name for name, _ in pyogrio.list_layers(run.gpkg)]:
        return None
    return cast(gpd.GeoDataFrame, pyogrio.read_dataframe(run.gpkg, layer=layer))


@dataclass(frozen=True)
class Survey:
    """The surveyed area of a run, in a metric CRS: what prescriptions are clipped to.

    Attributes:
        outline: The area with its pixel steps simplified inwards (see
            :func:`agriseg.field.footprint.inward_outline`).
        exact: Its valid pixels.
    """

    outline: gpd.GeoSeries
    exact: gpd.GeoSeries

    @property
    def crs(self) -> CRS:
        return CRS.from_user_input(self.outline.crs)

    @property
    def area_m2(self) -> float:
        return float(self.exact.area.sum())

    def clip(self, geometry: np.ndarray) -> np.ndarray:
        """``geometry`` cut to the outline (polygons only; empty where nothing is left)."""
        outline = self.outline.iloc[0]
        shapely.prepare(outline)
        clipped = np.array(geometry, dtype=object)
        cut = ~shapely.contains(outline, clipped)  # the inner zones stay as they are
        clipped[cut] = shapely.intersection(clipped[cut], outline)
        return np.array([_polygons(g) for g in clipped], dtype=object)

    def imaged_m2(self, geometry: np.ndarray) -> np.ndarray:
        """Area of each geometry on valid pixels."""
        return np.asarray(shapely.area(shapely.intersection(geometry, self.exact.iloc[0])))


def _polygons(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygonal parts of ``geometry`` (a clip may leave lines and points)."""
    parts = shapely.get_parts(geometry)
    parts = parts[shapely.get_type_id(parts) == 3]
    if not len(parts):
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(list(parts))


def survey_of(run: RunOutputs) -> Survey:
    """The run's surveyed area (its class raster's valid pixels), in a metric CRS."""
    if not run.classes_path.is_file():
        raise InputError(
            f"{run.classes_path}: missing, so the surveyed area is unknown and a prescription "
            f"could reach past it; rerun agriseg run for {run.stem}"
        )
    area: SurveyedArea = surveyed_area(run.classes_path)
    lonlat = gpd.GeoSeries([area.exact], crs=area.crs).to_crs(WGS84).total_bounds
    metric = grid_crs(area.crs, tuple(float(v) for v in lonlat))  # type: ignore[arg-type]
    return Survey(
        gpd.GeoSeries([area.outline], crs=area.crs).to_crs(metric),
        gpd.GeoSeries([area.exact], crs=area.crs).to_crs(metric),
    )


@dataclass(frozen=True)
class Prescription:
    """Polygons with a rate each, in a metric CRS: ``zone_id``, ``rate``, ``unit``,
    ``zone_m2`` (the polygon's area), ``imaged_m2`` (its area on valid pixels, as the
    statistics measured it) and any statistics.

    Attributes:
        cell_m: Cell edge of its task-data grid, metres.
        cover: How a grid cell takes a rate: from the polygon it overlaps ``most``, or
            the highest it ``touch``es (spot spraying: no weed left out).
    """

    name: str
    frame: gpd.GeoDataFrame
    unit: Unit
    product: str | None
    cell_m: float
    cover: Literal["most", "touch"]


def _frame(
    zone_id: Any,
    rates: np.ndarray,
    unit: Unit,
    geometry: np.ndarray,
    imaged_m2: np.ndarray,
    crs: CRS,
    extra: dict[str, Any] | None = None,
) -> gpd.GeoDataFrame:
    """A prescription's table (see :class:`Prescription`); rows left empty by a clip dropped."""
    frame = gpd.GeoDataFrame(
        {
            "zone_id": zone_id,
            "rate": rates,
            "unit": [unit] * len(geometry),
            "zone_m2": np.round(shapely.area(geometry), 3),
            "imaged_m2": np.round(np.asarray(imaged_m2, dtype="float64"), 3),
            **(extra or {}),
        },
        geometry=gpd.GeoSeries(geometry, crs=crs),
        crs=crs,
    )
    return frame[~frame.geometry.is_empty].reset_index(drop=True)


def spot_prescription(
    run: RunOutputs, options: PrescriptionOptions, survey: Survey
) -> Prescription:
    """Spray sections around the run's weed polygons, each with the spot rate, clipped to
    the surveyed area."""
    health = _read_layer(run, "health")
    if health is None:
        raise InputError(f"{run.gpkg}: no 'health' layer; rerun agriseg run for {run.stem}")
    made = run.summary.get("health", {}).get("polygon_classes")  # absent before --polygons
    left_out = [name for name in run.weed_classes if made is not None and name not in made]
    if left_out:
        raise InputError(
            f"{run.summary_path}: the run made no polygons of {', '.join(left_out)} (its "
            f"--polygons gave {', '.join(made) or 'none'}), so a spray map would miss those "
            "weeds; rerun agriseg run with --polygons roles (the default) or all"
        )
    weeds = health[health["class"].isin(run.weed_classes)]
    sections = spray_sections(
        weeds.to_crs(survey.crs).geometry.to_numpy(), options.buffer_m, options.min_section_m2
    )
    # A section cut by the survey's edge may fall apart: one row per part.
    sections = shapely.get_parts(survey.clip(sections))
    frame = _frame(
        np.arange(1, len(sections) + 1, dtype="int32"),
        np.full(len(sections), options.spot_rate),
        options.rate_unit,
        sections,
        survey.imaged_m2(sections),
        survey.crs,
    )
    return Prescription(
        "spot spray",
        frame,
        options.rate_unit,
        options.task_names.product,
        options.cell_m or SPOT_CELL_M,
        "touch",
    )


#: Zone statistics of the summary's per-field entries, as in the ``zones`` layer.
FIELD_STATISTICS = ("weed_pressure", "disease_incidence", "health_score")


def field_zones(run: RunOutputs, fields_path: Path) -> gpd.GeoDataFrame:
    """The fields of ``fields_path`` with the run's statistics of each, as zone rows
    (``zone_id`` is the field id; the columns of the ``zones`` layer)."""
    stats = {str(f["field_id"]): f for f in run.summary.get("fields") or []}
    if not stats:
        raise InputError(
            f"{run.summary_path}: the run has no per-field statistics; rerun agriseg run "
            f"with --fields {fields_path}"
        )
    crs = CRS.from_user_input(run.summary["input"]["crs"])
    fields = read_fields(fields_path, crs)
    missing = [i for i in fields.ids if i not in stats]
    if missing:
        raise InputError(
            f"{fields_path}: field(s) {', '.join(missing[:5])} have no statistics in "
            f"{run.summary_path}; give the --fields file that run used"
        )
    rows = []
    for fid in fields.ids:
        entry = stats[fid]
        row: dict[str, Any] = {"zone_id": fid, "area_m2": entry["valid_area_m2"]}
        row.update({f"{name}_share": c["share"] for name, c in entry["classes"].items()})
        numbers = {k: v for k, v in entry.items() if k in FIELD_STATISTICS or k.startswith("mean_")}
        row.update({k: np.nan if v is None else v for k, v in numbers.items()})
        rows.append(row)
    return gpd.GeoDataFrame(rows, geometry=list(fields.geometry), crs=crs)


def zone_prescription(
    run: RunOutputs, options: PrescriptionOptions, rates: RateTable, survey: Survey
) -> Prescription:
    """The run's management zones (or ``options.fields``), each with the rate the table
    gives its statistics, clipped to the surveyed area; grid slivers join a neighbour
    (see :func:`agriseg.health.zones.join_slivers`)."""
    if options.fields is not None:
        zones = field_zones(run, options.fields)
        zone_id = zones["zone_id"].to_numpy()
        cell_m = FIELD_CELL_M
    else:
        found = _read_layer(run, "zones")
        if found is None:
            raise InputError(
                f"{run.gpkg}: no 'zones' layer for the rate table {rates.source} to apply to; "
                "rerun agriseg run with --grid SIZE_M (e.g. --grid 10), or give --fields FILE"
            )
        cell_m = math.sqrt(float(shapely.area(found.geometry.to_numpy()).max()))
        classes = ClassList.from_json(run.summary["model"]["classes"], str(run.summary_path))
        zones = join_slivers(found, classes)
        zone_id = zones["zone_id"].to_numpy(dtype="int32")
    geometry = zones.to_crs(survey.crs).geometry.to_numpy()
    frame = _frame(
        zone_id,
        rates.rates(zones),
        rates.unit,
        survey.clip(geometry),
        zones["area_m2"].to_numpy(dtype="float64"),
        survey.crs,
        {s: zones[s].to_numpy() for s in (*rates.statistics, "cells") if s in zones},
    )
    return Prescription(
        "zone rates",
        frame,
        rates.unit,
        options.task_names.product,
        options.cell_m or cell_m,
        "most",
    )


def _geometry_options(frame: gpd.GeoDataFrame) -> dict[str, Any]:
    """Polygons, unless some zone (a field) has several parts: then all multipolygons."""
    multi = bool((frame.geometry.geom_type == "MultiPolygon").any())
    return {"geometry_type": "MultiPolygon" if multi else "Polygon", "promote_to_multi": multi}


# -- writers ---------------------------------------------------------------------------

#: Shapefile (dBASE) field names, at most 10 characters: ``ZONE_M2`` is the polygon's
#: area, ``IMAGED_M2`` its area on valid pixels (what the statistics measured).
SHAPEFILE_FIELDS = {
    "zone_id": "ZONE_ID",
    "rate": "RATE",
    "unit": "UNIT",
    "zone_m2": "ZONE_M2",
    "imaged_m2": "IMAGED_M2",
}


def write_shapefile_zip(
    prescription: Prescription, final: Path, transaction: OutputTransaction
) -> None:
    """A zipped ESRI Shapefile of ``prescription`` in WGS84 (fields of :data:`SHAPEFILE_FIELDS`)."""
    folder = transaction.staging_folder(final.parent, f"{final.name}.parts")
    stem = final.name.removesuffix(".shp.zip")
    frame = prescription.frame[[*SHAPEFILE_FIELDS, "geometry"]].rename(columns=SHAPEFILE_FIELDS)
    pyogrio.write_dataframe(
        frame.to_crs(WGS84),
        folder / f"{stem}.shp",
        driver="ESRI Shapefile",
        **_geometry_options(frame),
        encoding="UTF-8",
    )
    with zipfile.ZipFile(transaction.stage(final), "w", zipfile.ZIP_DEFLATED) as archive:
        for part in sorted(folder.iterdir()):
            archive.write(part, part.name)


def write_taskdata_zip(
    prescriptions: Sequence[Prescription],
    stem: str,
    survey: Survey,
    options: PrescriptionOptions,
    final: Path,
    transaction: OutputTransaction,
) -> None:
    """``TASKDATA/TASKDATA.XML`` (and its grid files) in a zip: unpack it onto the
    terminal's USB stick."""
    from isoxml.util.isoxml_io import isoxml_to_text

    task_data, files = build_taskdata(
        prescriptions, stem, survey.outline, options.isoxml, options.task_names
    )
    with zipfile.ZipFile(transaction.stage(final), "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("TASKDATA/TASKDATA.XML", isoxml_to_text(task_data))
        for name, data in files.items():
            archive.writestr(f"TASKDATA/{name}.bin", data)


def rate_style(rates: Sequence[float], unit: str) -> str:
    """QGIS style of a prescription layer: one class per rate, coloured by its share of
    the highest rate, from green (none) to red (the most)."""
    distinct = sorted(set(rates)) or [0.0]
    palette = [rgb for _, rgb in WEED_PRESSURE_RANGES]
    top = distinct[-1] or 1.0
    bounds = [
        distinct[0],
        *((a + b) / 2 for a, b in zip(distinct, distinct[1:], strict=False)),
        distinct[-1],
    ]
    ranges = [
        (bounds[k], bounds[k + 1], palette[round(rate / top * (len(palette) - 1))])
        for k, rate in enumerate(distinct)
    ]
    return graduated_qml("rate", ranges, labels=[f"{rate:g} {unit}" for rate in distinct])


def write_prescription_gpkg(
    prescriptions: dict[str, Prescription], final: Path, transaction: OutputTransaction
) -> None:
    """``prescriptions`` (by layer) in one GeoPackage, each layer styled by rate."""
    tmp = transaction.stage(final)
    for layer, prescription in prescriptions.items():
        write_layer(
            prescription.frame,
            tmp,
            layer,
            **_geometry_options(prescription.frame),
            append=tmp.exists(),
        )
    write_layer_styles(
        tmp,
        {layer: rate_style(p.frame["rate"].tolist(), p.unit) for layer, p in prescriptions.items()},
    )


@dataclass
class PrescriptionResult:
    """What :func:`prescribe` wrote for one run, and a summary of it.

    Attributes:
        spot_share: Share of the surveyed area the spot sections spray.
        warnings: What the user should know before spraying (one line each).
    """

    stem: str
    outputs: dict[str, Path]
    spot_sections: int
    spot_area_m2: float
    surveyed_m2: float
    spot_share: float
    zone_rates: dict[float, int] = field(default_factory=dict)  # rate -> zones
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunPrescriptions:
    """The prescriptions of one run, by GeoPackage layer, and its surveyed area."""

    stem: str
    layers: dict[str, Prescription]
    survey: Survey


def run_prescriptions(run: RunOutputs, options: PrescriptionOptions) -> RunPrescriptions:
    """The prescriptions of one run: spot spray, and zone rates with a rate table."""
    survey = survey_of(run)
    layers = {SPOT_LAYER: spot_prescription(run, options, survey)}
    if options.rates is not None:
        layers[ZONE_LAYER] = zone_prescription(run, options, options.rates, survey)
    return RunPrescriptions(run.stem, layers, survey)


def spot_warnings(stem: str, share: float) -> list[str]:
    """A line when spot spraying would spray most of the field."""
    if share <= SPOT_WARN_SHARE:
        return []
    return [
        f"{stem}: the spot sections cover {share:.0%} of the surveyed area (more than "
        f"{SPOT_WARN_SHARE:.0%}), so spot spraying is close to a blanket spray here; check "
        "the weed map, or lower --buffer and --min-section"
    ]


def write_prescriptions(
    made: RunPrescriptions,
    options: PrescriptionOptions,
    out_dir: Path,
    stamp: Callable[[Path], None] | None = None,
    reliability: dict[str, Any] | None = None,
) -> PrescriptionResult:
    """Write one run's prescriptions into ``out_dir``, all files together or none;
    beside the run's own outputs they are listed in its summary, replacing its earlier
    prescriptions as a whole (see :mod:`agriseg.io.ownership`). ``stamp`` adds to the
    GeoPackage before it appears, ``reliability`` (the run's verdict, see
    :mod:`agriseg.field.trust`) goes into the prescription's summary."""
    stem, layers = made.stem, made.layers
    paths = {k: out_dir / f"{stem}{suffix}" for k, suffix in PRESCRIPTION_SUFFIXES.items()}
    zones = layers.get(ZONE_LAYER)
    if zones is None:
        del paths["zones_shp"]
    spot = layers[SPOT_LAYER]
    # output_folder creates out_dir if needed (removing it again if this fails) and
    # clears temporaries left by a killed run or prescribe.
    with output_folder(out_dir), output_transaction() as transaction:
        write_prescription_gpkg(layers, paths["gpkg"], transaction)
        if stamp is not None:
            stamp(transaction.staged(paths["gpkg"]))
        write_shapefile_zip(spot, paths["spot_shp"], transaction)
        if zones is not None:
            write_shapefile_zip(zones, paths["zones_shp"], transaction)
        write_taskdata_zip(
            list(layers.values()), stem, made.survey, options, paths["taskdata"], transaction
        )
        result = _result(made, paths)
        summary = transaction.stage(paths["summary"])
        data = _summary(result, options)
        if reliability is not None:
            data = {"reliability": reliability, **data}
        summary.write_text(json.dumps(data, indent=2), encoding="utf-8")
        if summary_path(out_dir, stem).is_file():
            record_outputs(transaction, out_dir, stem, paths.values(), PRESCRIPTION_KINDS)
    return result


def _result(made: RunPrescriptions, paths: dict[str, Path]) -> PrescriptionResult:
    spot, zones = made.layers[SPOT_LAYER], made.layers.get(ZONE_LAYER)
    zone_rates: dict[float, int] = {}
    if zones is not None:
        values, counts = np.unique(zones.frame["rate"], return_counts=True)
        zone_rates = {float(v): int(c) for v, c in zip(values, counts, strict=True)}
    sprayed = float(spot.frame["zone_m2"].sum())
    surveyed = made.survey.area_m2
    share = sprayed / surveyed if surveyed > 0 else 0.0
    return PrescriptionResult(
        made.stem,
        paths,
        len(spot.frame),
        round(sprayed, 3),
        round(surveyed, 3),
        round(share, 4),
        zone_rates,
        spot_warnings(made.stem, share),
    )


def _summary(result: PrescriptionResult, options: PrescriptionOptions) -> dict[str, Any]:
    """``<stem>.prescription.json``: what was prescribed, and any warning."""
    unit = options.rate_unit
    return {
        "surveyed_m2": result.surveyed_m2,
        "spot": {
            "sections": result.spot_sections,
            "area_m2": result.spot_area_m2,
            "share_of_surveyed": result.spot_share,
            "rate": options.spot_rate,
            "unit": unit,
        },
        "zones": [
            {"rate": rate, "unit": unit, "zones": n}
            for rate, n in sorted(result.zone_rates.items())
        ],
        "isoxml": options.isoxml,
        "files": {kind: path.name for kind, path in result.outputs.items()},
        "warnings": result.warnings,
    }


def prescribe(
    run_dir: Path,
    options: PrescriptionOptions,
    out_dir: Path | None = None,
    stems: Sequence[str] | None = None,
    force: bool = False,
) -> list[PrescriptionResult]:
    """Prescriptions for every run in ``run_dir`` (see :func:`find_runs`; or those of
    ``stems``), written to ``out_dir`` (default: beside each run's outputs).

    Every run's prescriptions are made (and the rate table checked against its zones)
    before anything is written; each run's files appear together or not at all. An
    ``unreliable`` run is refused unless ``force`` (see :mod:`agriseg.field.trust`); the
    GeoPackage records the run's verdict and any override.
    """
    from agriseg.field.trust import admit, stamp_for

    runs = [r for r in find_runs(run_dir) if stems is None or r.stem in stems]
    for run in runs:
        # Beside a run, a file of a prescription's name that the run's summary does
        # not list is not agriseg's to replace.
        target = out_dir or run.run_dir
        if summary_path(target, run.stem).is_file():
            inputs = [options.fields] if options.fields else []
            check_free(target, run.stem, PRESCRIPTION_KINDS, inputs)
    records = admit(runs, "prescribe", force)
    made = [(run, run_prescriptions(run, options)) for run in runs]
    return [
        write_prescriptions(
            m, options, out_dir or run.run_dir, stamp_for(run, records[run.stem]), records[run.stem]
        )
        for run, m in made
    ]

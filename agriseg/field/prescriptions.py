"""Prescriptions for the sprayer: spot-spray polygons and zone rates from a finished run.

A run's weed polygons (``<stem>.health.gpkg`` layer ``health``) are buffered by a
safety margin, merged into spray sections and given the spot rate; its management
zones (layer ``zones``, from ``agriseg run --grid``) get a rate from a
:class:`RateTable`, a plain-text file an agronomist can read::

    # herbicide by weed pressure, first matching line wins
    weed_pressure >= 30%: 2.0 l/ha
    weed_pressure >= 0.10: 1.5 l/ha
    otherwise: 0 l/ha

Both prescriptions are written as a zipped ESRI Shapefile in WGS84 (most terminals
and farm software), as ISO 11783-10 task data (``TASKDATA/TASKDATA.XML``, zipped, for
ISOBUS task controllers) and as a GeoPackage styled by rate for QGIS.
"""

from __future__ import annotations

import json
import math
import operator
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from agriseg import __version__
from agriseg.errors import InputError
from agriseg.health.qgis import WEED_PRESSURE_RANGES, graduated_qml, write_layer_styles
from agriseg.health.zones import grid_crs, read_fields
from agriseg.io.atomic import OutputTransaction, output_folder, output_transaction

Unit = Literal["l/ha", "kg/ha"]

#: Per unit: the ISO 11783-11 DDI of its setpoint rate and the factor from the unit to
#: the DDI's (1 l/ha = 100 mm³/m², DDI 1; 1 kg/ha = 100 mg/m², DDI 6).
ISO_RATE_DDI: dict[str, tuple[int, int]] = {"l/ha": (0x0001, 100), "kg/ha": (0x0006, 100)}

WGS84 = CRS.from_epsg(4326)

#: Layers of ``<stem>.prescription.gpkg``.
ZONE_LAYER = "prescription"
SPOT_LAYER = "spot"

#: What ``prescribe`` writes for input ``<stem>``: ``<stem>`` + suffix, by kind.
PRESCRIPTION_SUFFIXES = {
    "gpkg": ".prescription.gpkg",
    "spot_shp": ".spot.shp.zip",
    "zones_shp": ".zones.shp.zip",
    "taskdata": ".taskdata.zip",
}

RULE_EXAMPLE = "write rules as 'weed_pressure >= 0.10: 1.5 l/ha' and end with 'otherwise: 0 l/ha'"

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_RATE = rf"(?P<rate>-?(?:{_NUMBER}))\s*(?P<unit>\S+)"
_RULE = re.compile(
    rf"^(?P<stat>[A-Za-z_][A-Za-z0-9_\-]*)\s*(?P<op>>=|<=|>|<)\s*"
    rf"(?P<threshold>-?(?:{_NUMBER}))\s*(?P<percent>%?)\s*:\s*{_RATE}$"
)
_OTHERWISE = re.compile(rf"^otherwise\s*:\s*{_RATE}$", re.IGNORECASE)
_PRODUCT = re.compile(r"^product\s*:\s*(?P<name>\S.*)$", re.IGNORECASE)
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

    ``product`` is the name of what is applied (the table's ``product:`` line), if given.
    """

    rules: tuple[RateRule, ...]
    unit: Unit
    source: str
    product: str | None = None

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
    and an optional ``product: NAME`` line.

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
    product: str | None = None
    product_where = ""
    for n, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{source}:{n}" if line_numbers else f"{source} #{n}"
        named = _PRODUCT.match(text)
        if named is not None:
            if product is not None:
                raise _rule_error(
                    where,
                    f"a second product line (the first is {product_where})",
                    "give one product per table",
                )
            product, product_where = named["name"].strip(), where
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
        if groups["unit"] not in ISO_RATE_DDI:
            raise _rule_error(
                where,
                f"unknown unit {groups['unit']!r}",
                f"use one of {', '.join(ISO_RATE_DDI)} (e.g. '1.5 l/ha')",
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
        rules.append(RateRule(statistic, groups.get("op") or "", threshold, rate, where))
    if not rules:
        raise _rule_error(source, "no rate rules")
    if rules[-1].statistic is not None:
        raise _rule_error(
            last,
            "the table has no 'otherwise' line, so zones that match no rule would get no rate",
            f"end it with 'otherwise: 0 {unit}'",
        )
    return RateTable(tuple(rules), cast(Unit, unit), source, product)


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
    """

    buffer_m: float = 0.5
    min_section_m2: float = 0.5
    spot_rate: float = 2.0
    unit: Unit = "l/ha"
    rates: RateTable | None = None
    fields: Path | None = None

    def __post_init__(self) -> None:
        for name, value in (
            ("--buffer", self.buffer_m),
            ("--min-section", self.min_section_m2),
            ("--spot-rate", self.spot_rate),
        ):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} {value}: must be a number of 0 or more")

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
            "has no map to spray by; rerun agriseg run with --assume-crs EPSG:..."
        )
    if not run.gpkg.is_file():
        raise InputError(
            f"{run.gpkg}: missing, so there are no weed polygons to prescribe from; rerun "
            "agriseg run with --format gpkg (the default)"
        )
    if layer not in [name for name, _ in pyogrio.list_layers(run.gpkg)]:
        return None
    return cast(gpd.GeoDataFrame, pyogrio.read_dataframe(run.gpkg, layer=layer))


def _metric_crs(crs: CRS, frame: gpd.GeoDataFrame) -> CRS:
    west, south, east, north = frame.to_crs(WGS84).total_bounds
    return grid_crs(crs, (west, south, east, north))


@dataclass(frozen=True)
class Prescription:
    """Polygons with a rate each (``zone_id``, ``rate``, ``unit``, ``area_m2`` and any
    statistics), in a metric CRS."""

    name: str
    frame: gpd.GeoDataFrame
    unit: Unit
    product: str | None = None


def spot_prescription(run: RunOutputs, options: PrescriptionOptions) -> Prescription:
    """Spray sections around the run's weed polygons, each with the spot rate."""
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
    crs = CRS.from_user_input(health.crs)
    weeds = health[health["class"].isin(run.weed_classes)]
    metric = _metric_crs(crs, health) if len(health) else crs
    sections = spray_sections(
        weeds.to_crs(metric).geometry.to_numpy(), options.buffer_m, options.min_section_m2
    )
    frame = gpd.GeoDataFrame(
        {
            "zone_id": np.arange(1, len(sections) + 1, dtype="int32"),
            "rate": np.full(len(sections), options.spot_rate),
            "unit": [options.rate_unit] * len(sections),
            "area_m2": np.round(shapely.area(sections), 3),
        },
        geometry=gpd.GeoSeries(sections, crs=metric),
        crs=metric,
    )
    product = options.rates.product if options.rates is not None else None
    return Prescription("spot spray", frame, options.rate_unit, product)


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
    run: RunOutputs, rates: RateTable, fields: Path | None = None
) -> Prescription:
    """The run's management zones (or ``fields``), each with the rate the table gives
    its statistics."""
    if fields is not None:
        zones = field_zones(run, fields)
    else:
        found = _read_layer(run, "zones")
        if found is None:
            raise InputError(
                f"{run.gpkg}: no 'zones' layer for the rate table {rates.source} to apply to; "
                "rerun agriseg run with --grid SIZE_M (e.g. --grid 10), or give --fields FILE"
            )
        zones = found
    frame = gpd.GeoDataFrame(
        {
            "zone_id": zones["zone_id"] if fields is not None else zones["zone_id"].astype("int32"),
            "rate": rates.rates(zones),
            "unit": [rates.unit] * len(zones),
            "area_m2": zones["area_m2"].round(3),
            **{s: zones[s] for s in rates.statistics},
        },
        geometry=zones.geometry,
        crs=zones.crs,
    )
    return Prescription("zone rates", frame, rates.unit, rates.product)


def _geometry_options(frame: gpd.GeoDataFrame) -> dict[str, Any]:
    """Polygons, unless some zone (a field) has several parts: then all multipolygons."""
    multi = bool((frame.geometry.geom_type == "MultiPolygon").any())
    return {"geometry_type": "MultiPolygon" if multi else "Polygon", "promote_to_multi": multi}


# -- writers ---------------------------------------------------------------------------

#: Shapefile (dBASE) field names, at most 10 characters.
SHAPEFILE_FIELDS = {"zone_id": "ZONE_ID", "rate": "RATE", "unit": "UNIT", "area_m2": "AREA_M2"}


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


def _rate_codes(rates: np.ndarray) -> dict[float, int]:
    """Treatment-zone code of each rate: 0 for none (also outside the polygons), then
    1, 2... by rate."""
    distinct = sorted(set(rates.tolist()) - {0.0})
    if len(distinct) > 254:
        raise InputError(
            f"{len(distinct)} distinct rates: ISOXML allows at most 254 treatment zones; "
            "use fewer rules or round the rates"
        )
    return {0.0: 0, **{rate: k for k, rate in enumerate(distinct, start=1)}}


def build_taskdata(prescriptions: Sequence[Prescription], stem: str) -> Any:
    """ISO 11783-10 task data (v4.3): one task per prescription.

    Each distinct rate is a treatment zone holding the polygons with that rate; zone 0,
    the default, position-lost and out-of-field zone, applies nothing. A named product
    becomes a product (PDT) the rates refer to.
    """
    import isoxml.models.base.v4 as iso
    from isoxml.converter.shapely_geom import ShapelyConverterV4

    to_iso = ShapelyConverterV4()
    tasks: list[Any] = []
    presentations: dict[str, Any] = {}
    products: dict[str, Any] = {}
    for k, prescription in enumerate(prescriptions, start=1):
        product = None
        if prescription.product is not None:
            product = products.setdefault(
                prescription.product,
                iso.Product(id=f"PDT{len(products) + 1}", designator=prescription.product[:32]),
            )
        ddi, factor = ISO_RATE_DDI[prescription.unit]
        vpn = presentations.setdefault(
            prescription.unit,
            iso.ValuePresentation(
                id=f"VPN{len(presentations) + 1}",
                offset=0,
                scale=Decimal(1) / factor,
                number_of_decimals=2,
                unit_designator=prescription.unit,
            ),
        )

        def variable(
            rate: float, ddi: int = ddi, factor: int = factor, vpn: Any = vpn, pdt: Any = product
        ) -> Any:
            return iso.ProcessDataVariable(
                process_data_ddi=ddi.to_bytes(2, "big"),
                process_data_value=round(rate * factor),
                product_id_ref=None if pdt is None else pdt.id,
                value_presentation_id_ref=vpn.id,
            )

        frame = prescription.frame.to_crs(WGS84)
        codes = _rate_codes(frame["rate"].to_numpy())
        zones = []
        for rate, code in codes.items():
            name = f"{rate:g} {prescription.unit}" if code else "no application"
            zone = iso.TreatmentZone(code=code, designator=name)
            zone.process_data_variables.append(variable(rate))
            for polygon in frame.geometry[frame["rate"] == rate]:
                for part in shapely.get_parts(polygon):
                    zone.polygons.append(to_iso.to_iso_polygon(part, iso.PolygonType.TreatmentZone))
            zones.append(zone)
        tasks.append(
            iso.Task(
                id=f"TSK{k}",
                designator=f"{stem} {prescription.name}"[:32],
                status=iso.TaskStatus.Planned,
                treatment_zones=zones,
                default_treatment_zone_code=0,
                position_lost_treatment_zone_code=0,
                out_of_field_treatment_zone_code=0,
            )
        )
    return iso.Iso11783TaskData(
        version_minor=iso.Iso11783TaskDataVersionMinor.VALUE_3,
        management_software_manufacturer="agriseg",
        management_software_version=__version__,
        data_transfer_origin=iso.Iso11783TaskDataDataTransferOrigin.FMIS,
        value_presentations=list(presentations.values()),
        products=list(products.values()),
        tasks=tasks,
    )


def write_taskdata_zip(
    prescriptions: Sequence[Prescription], stem: str, final: Path, transaction: OutputTransaction
) -> None:
    """``TASKDATA/TASKDATA.XML`` in a zip: unpack it onto the terminal's USB stick."""
    from isoxml.util.isoxml_io import isoxml_to_text

    text = isoxml_to_text(build_taskdata(prescriptions, stem))
    with zipfile.ZipFile(transaction.stage(final), "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("TASKDATA/TASKDATA.XML", text)


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
        pyogrio.write_dataframe(
            prescription.frame,
            tmp,
            layer=layer,
            driver="GPKG",
            **_geometry_options(prescription.frame),
            append=tmp.exists(),
        )
    write_layer_styles(
        tmp,
        {layer: rate_style(p.frame["rate"].tolist(), p.unit) for layer, p in prescriptions.items()},
    )


@dataclass
class PrescriptionResult:
    """What :func:`prescribe` wrote for one run, and a summary of it."""

    stem: str
    outputs: dict[str, Path]
    spot_sections: int
    spot_area_m2: float
    zone_rates: dict[float, int] = field(default_factory=dict)  # rate -> zones


def run_prescriptions(run: RunOutputs, options: PrescriptionOptions) -> dict[str, Prescription]:
    """The prescriptions of one run, by GeoPackage layer: spot spray, and zone rates
    with a rate table."""
    layers = {SPOT_LAYER: spot_prescription(run, options)}
    if options.rates is not None:
        layers[ZONE_LAYER] = zone_prescription(run, options.rates, options.fields)
    return layers


def write_prescriptions(
    stem: str, layers: dict[str, Prescription], out_dir: Path
) -> PrescriptionResult:
    """Write one run's prescriptions into ``out_dir``, all files together or none."""
    paths = {k: out_dir / f"{stem}{suffix}" for k, suffix in PRESCRIPTION_SUFFIXES.items()}
    zones = layers.get(ZONE_LAYER)
    if zones is None:
        del paths["zones_shp"]
    spot = layers[SPOT_LAYER]
    # output_folder creates out_dir if needed (removing it again if this fails) and
    # clears temporaries left by a killed run or prescribe.
    with output_folder(out_dir), output_transaction() as transaction:
        write_prescription_gpkg(layers, paths["gpkg"], transaction)
        write_shapefile_zip(spot, paths["spot_shp"], transaction)
        if zones is not None:
            write_shapefile_zip(zones, paths["zones_shp"], transaction)
        write_taskdata_zip(list(layers.values()), stem, paths["taskdata"], transaction)
    zone_rates: dict[float, int] = {}
    if zones is not None:
        values, counts = np.unique(zones.frame["rate"], return_counts=True)
        zone_rates = {float(v): int(c) for v, c in zip(values, counts, strict=True)}
    return PrescriptionResult(
        stem, paths, len(spot.frame), round(float(spot.frame["area_m2"].sum()), 3), zone_rates
    )


def prescribe(
    run_dir: Path,
    options: PrescriptionOptions,
    out_dir: Path | None = None,
    stems: Sequence[str] | None = None,
) -> list[PrescriptionResult]:
    """Prescriptions for every run in ``run_dir`` (see :func:`find_runs`; or those of
    ``stems``), written to ``out_dir`` (default: beside each run's outputs).

    Every run's prescriptions are made (and the rate table checked against its zones)
    before anything is written; each run's files appear together or not at all.
    """
    runs = [r for r in find_runs(run_dir) if stems is None or r.stem in stems]
    made = [(run, run_prescriptions(run, options)) for run in runs]
    return [write_prescriptions(run.stem, layers, out_dir or run.run_dir) for run, layers in made]

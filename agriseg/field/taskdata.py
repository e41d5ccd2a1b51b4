"""ISO 11783-10 task data (``TASKDATA.XML`` v4.3 and its grid files) for prescriptions.

What an ISOBUS task controller executes: every task names a customer, a farm, a
partfield (bounded by the surveyed area) and a product, and carries its rates either
as a grid (``GRD``, type 2: one process data value per cell, the baseline TC-GEO
capability) or as polygon treatment zones (optional on terminals).

A rate reaches the controller as a process data value: an integer count of its DDI's
resolution in its data-dictionary unit (ISO 11783-11). 1.5 l/ha under DDI 1 (mm³/m²,
0.01 per count) is 150 mm³/m², so 15000. The value presentation (VPN) only changes
what a terminal shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import shapely
from isoxml.models.ddi_entities import DDEntity
from pyproj import CRS, Geod

from agriseg import __version__
from agriseg.config import IsoxmlLayout
from agriseg.errors import InputError
from agriseg.health.zones import MAX_GRID_CELLS, best_overlap

if TYPE_CHECKING:
    from agriseg.field.prescriptions import Prescription

WGS84 = CRS.from_epsg(4326)

#: Largest process data value (a signed 32-bit integer).
MAX_VALUE = 2**31 - 1

#: Longest designator (names of customer, farm, field, product, task) ISO 11783-10 allows.
MAX_NAME = 32


@dataclass(frozen=True)
class RateUnit:
    """A rate unit of the rate tables and the data-dictionary entry it is sent under.

    Attributes:
        ddi: The setpoint DDI (ISO 11783-11).
        dd_unit: That entry's unit (checked against the dictionary in the tests).
        per_unit: How many ``dd_unit`` one of this unit is.
    """

    ddi: int
    dd_unit: str
    per_unit: Decimal


#: Units a rate table may use, by name.
RATE_UNITS: dict[str, RateUnit] = {
    # 1 l/ha = 10^6 mm³ / 10^4 m²
    "l/ha": RateUnit(0x0001, "mm³/m²", Decimal(100)),  # Setpoint Volume Per Area
    # 1 kg/ha = 10^6 mg / 10^4 m²
    "kg/ha": RateUnit(0x0006, "mg/m²", Decimal(100)),  # Setpoint Mass Per Area
}


def dd_entity(unit: str) -> DDEntity:
    """The data-dictionary entry a rate in ``unit`` is sent under."""
    return DDEntity.from_id(RATE_UNITS[unit].ddi)


def _resolution(unit: str) -> Decimal:
    """One count of the DDI, in ``unit``."""
    return Decimal(repr(dd_entity(unit).bit_resolution)) / RATE_UNITS[unit].per_unit


def process_data_value(rate: float, unit: str) -> int:
    """``rate`` (in ``unit``) as the process data value of its DDI.

    Raises:
        InputError: the rate does not fit the 32-bit value.
    """
    counts = Decimal(repr(float(rate))) / _resolution(unit)
    value = int(counts.to_integral_value(rounding=ROUND_HALF_UP))
    if abs(value) > MAX_VALUE:
        top = Decimal(MAX_VALUE) * _resolution(unit)
        raise InputError(
            f"rate {rate:g} {unit}: above the {top:.0f} {unit} ISO 11783 can carry under "
            f"DDI {RATE_UNITS[unit].ddi}; check the rate table"
        )
    return value


@dataclass(frozen=True)
class TaskNames:
    """Names a terminal lists the task under (``None``: the default or the rate table's)."""

    customer: str | None = None
    farm: str | None = None
    field: str | None = None
    product: str | None = None

    def __post_init__(self) -> None:
        for what, name in vars(self).items():
            if name is not None and not 0 < len(name.strip()) <= MAX_NAME:
                raise InputError(
                    f"{what} name {name!r}: ISO 11783 names hold 1 to {MAX_NAME} characters; "
                    "give a shorter one"
                )

    def over(self, other: TaskNames) -> TaskNames:
        """These names, with ``other``'s where these have none."""
        return TaskNames(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(vars(self).values(), vars(other).values(), strict=True)
            )
        )


#: Names used when neither the command line nor the rate table gives one (the field
#: is named after the survey).
DEFAULT_NAMES = TaskNames(customer="Customer", farm="Farm", product="Product")


@dataclass(frozen=True)
class LonLatGrid:
    """Square-ish cells of ``cell_m`` metres in WGS84 degrees, rows from south to north
    and columns from west to east (the order of an ISOXML grid file)."""

    south: Decimal
    west: Decimal
    dlat: float
    dlon: float
    rows: int
    cols: int

    def cells(self) -> np.ndarray:
        """Cell polygons in WGS84, row by row from the south-west corner."""
        row, col = np.divmod(np.arange(self.rows * self.cols), self.cols)
        y0 = float(self.south) + row * self.dlat
        x0 = float(self.west) + col * self.dlon
        return np.asarray(shapely.box(x0, y0, x0 + self.dlon, y0 + self.dlat), dtype=object)


def lonlat_grid(bounds: tuple[float, float, float, float], cell_m: float) -> LonLatGrid:
    """The grid of ``cell_m`` cells (at the centre's latitude) covering WGS84 ``bounds``."""
    west, south, east, north = (float(v) for v in bounds)
    lon, lat = (west + east) / 2, (south + north) / 2
    geod = Geod(ellps="WGS84")
    _, north_lat, _ = geod.fwd(lon, lat, 0.0, cell_m)
    east_lon, _, _ = geod.fwd(lon, lat, 90.0, cell_m)
    dlat, dlon = round(north_lat - lat, 12), round(east_lon - lon, 12)
    # The origin is rounded down to what the XML holds (9 decimals), so cells still cover.
    q = Decimal("1e-9")
    s = Decimal(repr(south)).quantize(q, rounding=ROUND_FLOOR)
    w = Decimal(repr(west)).quantize(q, rounding=ROUND_FLOOR)
    rows = max(1, math.ceil((north - float(s)) / dlat))
    cols = max(1, math.ceil((east - float(w)) / dlon))
    if rows * cols > MAX_GRID_CELLS:
        raise InputError(
            f"--cell {cell_m:g} m makes a task grid of {rows * cols} cells (more than "
            f"{MAX_GRID_CELLS}); give a larger --cell"
        )
    return LonLatGrid(s, w, dlat, dlon, rows, cols)


def grid_values(prescription: Prescription, grid: LonLatGrid) -> np.ndarray:
    """Process data value of each cell of ``grid``, row by row from the south-west.

    A cell takes the rate of the polygon it overlaps most when the polygons cover at
    least half of it (a cell mostly outside the survey gets none), or for spot spraying
    the highest rate it touches (so no weed is left unsprayed); other cells, 0.
    """
    frame = prescription.frame
    cells = gpd.GeoSeries(grid.cells(), crs=WGS84).to_crs(frame.crs).to_numpy()
    rates = frame["rate"].to_numpy(dtype="float64")
    polygons = frame.geometry.to_numpy()
    rank = rates if prescription.cover == "touch" else None
    best = best_overlap(cells, polygons, rank)
    if prescription.cover == "most":
        # zones tile the survey without overlap: their cover of a cell is one union
        hit = np.flatnonzero(best >= 0)
        covered = shapely.area(shapely.intersection(cells[hit], shapely.union_all(polygons)))
        best[hit[covered < 0.5 * shapely.area(cells[hit])]] = -1
    codes = np.array([process_data_value(r, prescription.unit) for r in rates] + [0], "int64")
    return codes[best]  # -1 picks the trailing 0


def _rate_codes(rates: np.ndarray) -> dict[float, int]:
    """Treatment-zone code of each rate: 0 for none (also outside the polygons), then
    1, 2... by rate."""
    distinct = sorted(set(rates.tolist()) - {0.0})
    if len(distinct) > 254:
        raise InputError(
            f"{len(distinct)} distinct rates: ISOXML allows at most 254 treatment zones; "
            "use fewer rules or round the rates, or --isoxml grid"
        )
    return {0.0: 0, **{rate: k for k, rate in enumerate(distinct, start=1)}}


def build_taskdata(
    prescriptions: Sequence[Prescription],
    stem: str,
    boundary: gpd.GeoSeries,
    layout: IsoxmlLayout,
    names: TaskNames,
) -> tuple[Any, dict[str, bytes]]:
    """ISO 11783-10 task data (v4.3), one task per prescription, and its grid files.

    Args:
        prescriptions: What to apply, each with its polygons in a metric CRS.
        stem: The survey's name (the field's default name, the tasks' prefix).
        boundary: The surveyed area (the partfield's boundary), in a metric CRS.
        layout: ``grid`` (a GRD type 2 per task) or ``zones`` (polygon treatment zones).
        names: Customer, farm, field and product names (defaults for those not given).

    Returns:
        The task data and the grid files by name (``GRD00001`` ...).
    """
    import isoxml.models.base.v4 as iso
    from isoxml.converter.shapely_geom import ShapelyConverterV4

    to_iso = ShapelyConverterV4()
    names = names.over(DEFAULT_NAMES).over(TaskNames(field=stem[:MAX_NAME]))
    customer = iso.Customer(id="CTR1", last_name=names.customer)
    farm = iso.Farm(id="FRM1", designator=names.farm, customer_id_ref=customer.id)
    outline = boundary.to_crs(WGS84)
    partfield = iso.Partfield(
        id="PFD1",
        designator=names.field,
        area=round(float(boundary.area.sum())),
        customer_id_ref=customer.id,
        farm_id_ref=farm.id,
        polygons=[
            to_iso.to_iso_polygon(part, iso.PolygonType.PartfieldBoundary)
            for part in shapely.get_parts(outline.to_numpy())
        ],
    )
    tasks: list[Any] = []
    presentations: dict[str, Any] = {}
    products: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for k, prescription in enumerate(prescriptions, start=1):
        name = prescription.product or names.product
        assert name is not None  # DEFAULT_NAMES has one
        product = products.setdefault(
            name,
            iso.Product(id=f"PDT{len(products) + 1}", designator=name, type=iso.ProductF.Single),
        )
        unit = prescription.unit
        vpn = presentations.setdefault(
            unit,
            iso.ValuePresentation(
                id=f"VPN{len(presentations) + 1}",
                offset=0,
                scale=_resolution(unit),
                number_of_decimals=2,
                unit_designator=unit,
            ),
        )

        def variable(value: int, unit: str = unit, pdt: Any = product, vpn: Any = vpn) -> Any:
            return iso.ProcessDataVariable(
                process_data_ddi=RATE_UNITS[unit].ddi.to_bytes(2, "big"),
                process_data_value=value,
                product_id_ref=pdt.id,
                value_presentation_id_ref=vpn.id,
            )

        # Zone 0, the default, position-lost and out-of-field zone, applies nothing.
        nothing = iso.TreatmentZone(code=0, designator="no application")
        nothing.process_data_variables.append(variable(0))
        zones, grids = [nothing], []
        if layout == "grid":
            grid = lonlat_grid(tuple(outline.total_bounds), prescription.cell_m)
            values = grid_values(prescription, grid)
            filename = f"GRD{k:05d}"
            files[filename] = values.astype("<i4").tobytes()
            # A type 2 grid's cells replace the values of the zone it names.
            template = iso.TreatmentZone(code=1, designator=f"{prescription.name} grid")
            template.process_data_variables.append(variable(0))
            zones.append(template)
            grids.append(
                iso.Grid(
                    minimum_north_position=grid.south,
                    minimum_east_position=grid.west,
                    cell_north_size=grid.dlat,
                    cell_east_size=grid.dlon,
                    maximum_column=grid.cols,
                    maximum_row=grid.rows,
                    filename=filename,
                    filelength=len(files[filename]),
                    type=iso.GridType.GridType2,
                    treatment_zone_code=template.code,
                )
            )
        else:
            frame = prescription.frame.to_crs(WGS84)
            for rate, code in _rate_codes(frame["rate"].to_numpy()).items():
                zone = nothing if code == 0 else iso.TreatmentZone(code=code)
                if code:
                    zone.designator = f"{rate:g} {unit}"
                    zone.process_data_variables.append(variable(process_data_value(rate, unit)))
                    zones.append(zone)
                for polygon in frame.geometry[frame["rate"] == rate]:
                    for part in shapely.get_parts(polygon):
                        zone.polygons.append(
                            to_iso.to_iso_polygon(part, iso.PolygonType.TreatmentZone)
                        )
        tasks.append(
            iso.Task(
                id=f"TSK{k}",
                designator=f"{stem} {prescription.name}"[:MAX_NAME],
                customer_id_ref=customer.id,
                farm_id_ref=farm.id,
                partfield_id_ref=partfield.id,
                status=iso.TaskStatus.Planned,
                treatment_zones=zones,
                grids=grids,
                default_treatment_zone_code=0,
                position_lost_treatment_zone_code=0,
                out_of_field_treatment_zone_code=0,
            )
        )
    task_data = iso.Iso11783TaskData(
        version_minor=iso.Iso11783TaskDataVersionMinor.VALUE_3,
        management_software_manufacturer="agriseg",
        management_software_version=__version__,
        data_transfer_origin=iso.Iso11783TaskDataDataTransferOrigin.FMIS,
        customers=[customer],
        farms=[farm],
        partfields=[partfield],
        value_presentations=list(presentations.values()),
        products=list(products.values()),
        tasks=tasks,
    )
    return task_data, files

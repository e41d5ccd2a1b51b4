"""Per-field statistics and management-zone grids over a class raster.

Fields are boundary polygons from any vector file and CRS; a pixel belongs to the
field containing its centre (the later field where fields overlap). Grid cells are
squares of a given size in metres, laid on multiples of that size in the raster's
CRS when it is projected in metres, else in the local UTM zone; a pixel belongs
to the cell holding its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.features import rasterize
from rasterio.windows import Window

from agriseg.classes import ClassList
from agriseg.errors import InputError
from agriseg.health.health_stats import (
    ZoneLabeller,
    Zoning,
    health_indices,
    health_summary,
    raster_crs,
    zone_class_areas,
)
from agriseg.health.indices import IndexReader, zone_index_means
from agriseg.io.areas import is_planar_metric

#: Columns tried, in order, for a field's identifier before falling back to the row number.
FIELD_ID_COLUMNS = ("field_id", "id", "name")

#: Most grid cells a raster may be split into (bounds the statistics table).
MAX_GRID_CELLS = 4_000_000


@dataclass(frozen=True)
class Fields:
    """Field boundaries in a raster's CRS.

    Attributes:
        ids: Identifier of each field (as text).
        geometry: (Multi)polygons in the raster's CRS.
        source: File they were read from.
    """

    ids: tuple[str, ...]
    geometry: np.ndarray
    source: Path


def read_fields(path: Path, crs: CRS) -> Fields:
    """Read field boundary polygons and reproject them to ``crs``.

    The identifier is the first of the columns ``field_id``, ``id``, ``name``
    present (any case), else the row number.

    Raises:
        InputError: The file is missing, unreadable, has no CRS or no polygons.
    """
    path = Path(path)
    fix = "give a GeoPackage/GeoJSON/Shapefile of field boundary polygons with a CRS"
    if not path.is_file():
        raise InputError(f"{path}: no such fields file; {fix}")
    try:
        frame = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises several unrelated types for bad files
        raise InputError(f"{path}: cannot read fields ({exc}); {fix}") from exc
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.isna().all():
        raise InputError(f"{path}: the fields file has no geometries; {fix}")
    if frame.crs is None:
        raise InputError(
            f"{path}: the fields file has no CRS; assign one (e.g. "
            "`ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg`) and retry"
        )
    polygons = frame[frame.geometry.notna()]
    polygons = polygons[polygons.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise InputError(f"{path}: the fields file holds no polygons; {fix}")
    lower = {str(c).lower(): c for c in polygons.columns}
    column = next((lower[c] for c in FIELD_ID_COLUMNS if c in lower), None)
    ids = (
        [str(v) for v in polygons[column]]
        if column is not None
        else [str(i) for i in range(len(polygons))]
    )
    geometry = shapely.make_valid(polygons.to_crs(crs).geometry.to_numpy())
    return Fields(tuple(ids), np.asarray(geometry, dtype=object), path)


def field_labeller(fields: Fields, transform: Affine) -> ZoneLabeller:
    """A zone labeller giving each pixel the index of the field holding its centre."""

    def label(window: Window) -> np.ndarray:
        return rasterize(
            zip(fields.geometry, range(len(fields.ids)), strict=True),
            out_shape=(int(window.height), int(window.width)),
            transform=transform @ Affine.translation(window.col_off, window.row_off),
            fill=-1,
            dtype="int32",
        )

    return label


def field_statistics(
    classes_path: Path,
    classes: ClassList,
    fields: Fields,
    block_size: int = 2048,
    indices: IndexReader | None = None,
) -> list[dict]:
    """Health statistics (see :func:`agriseg.health.health_stats.health_summary`) for each
    field, with the mean of each vegetation index of ``indices`` (``mean_<index>``)."""
    with rasterio.open(classes_path) as src:
        transform, height, width = src.transform, src.height, src.width
    zoning = Zoning(field_labeller(fields, transform), len(fields.ids))
    areas, means = _measure(classes_path, (height, width), classes, zoning, block_size, indices)
    return field_table(fields, classes, areas, means, indices)


def _measure(
    classes_path: Path,
    shape: tuple[int, int],
    classes: ClassList,
    zoning: Zoning,
    block_size: int,
    indices: IndexReader | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One zoning's class areas, and its index means when ``indices`` are given."""
    areas = zone_class_areas(classes_path, len(classes), [zoning], block_size=block_size)[0]
    if indices is None:
        return areas, None
    means = zone_index_means(indices, *shape, [zoning], block_size=block_size)[0]
    return areas, means


def field_table(
    fields: Fields,
    classes: ClassList,
    areas: np.ndarray,
    means: np.ndarray | None = None,
    indices: IndexReader | None = None,
) -> list[dict]:
    """Per-field statistics from each field's class areas (and index means)."""
    stats = [
        {"field_id": fid, **health_summary(row, classes)}
        for fid, row in zip(fields.ids, areas, strict=True)
    ]
    if means is not None and indices is not None:
        for entry, row in zip(stats, means, strict=True):
            for name, value in zip(indices.names, row, strict=True):
                entry[f"mean_{name}"] = round(float(value), 4) if np.isfinite(value) else None
    return stats


def best_overlap(
    geometry: np.ndarray, targets: np.ndarray, rank: np.ndarray | None = None
) -> np.ndarray:
    """Index of the target each geometry overlaps most (-1 where it overlaps none by a
    positive area); with ``rank`` (one value per target), of the overlapped target of
    highest rank instead."""
    out = np.full(len(geometry), -1, dtype="int64")
    if not len(geometry) or not len(targets):
        return out
    g, t = shapely.STRtree(targets).query(geometry, predicate="intersects")
    if not len(g):
        return out
    overlap = shapely.area(shapely.intersection(geometry[g], targets[t]))
    key = overlap if rank is None else np.asarray(rank, dtype="float64")[t]
    # Sort by key so the last write for each geometry is its best target.
    order = np.argsort(key, kind="stable")
    order = order[overlap[order] > 0]
    out[g[order]] = t[order]
    return out


def assign_fields(geometry: np.ndarray, fields: Fields) -> np.ndarray:
    """The id of the field each geometry overlaps most (None where it overlaps none)."""
    best = best_overlap(geometry, fields.geometry)
    ids = np.array([*fields.ids, None], dtype=object)
    return ids[best]  # -1 picks the trailing None


@dataclass(frozen=True)
class ZoneGrid:
    """Square cells laid over a raster.

    Attributes:
        crs: CRS of the cells (metric).
        size: Cell edge in ``crs`` units (metres).
        left: Western edge of column 0.
        top: Northern edge of row 0.
        n_cols: Number of columns.
        n_rows: Number of rows.
    """

    crs: CRS
    size: float
    left: float
    top: float
    n_cols: int
    n_rows: int

    @property
    def n_cells(self) -> int:
        return self.n_cols * self.n_rows

    def cell_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cell index (``row * n_cols + col``) of points in the grid CRS; -1 outside."""
        col = np.floor((x - self.left) / self.size).astype("int64")
        row = np.floor((self.top - y) / self.size).astype("int64")
        inside = (col >= 0) & (col < self.n_cols) & (row >= 0) & (row < self.n_rows)
        return np.where(inside, row * self.n_cols + col, -1)

    def cells(self, index: np.ndarray) -> np.ndarray:
        """Polygons of the cells with the given indexes."""
        index = np.asarray(index, dtype="int64")
        x0 = self.left + (index % self.n_cols) * self.size
        y1 = self.top - (index // self.n_cols) * self.size
        return np.asarray(shapely.box(x0, y1 - self.size, x0 + self.size, y1), dtype=object)


#: Where the UTM grid departs from 6° zones (as MGRS and Norway's maps do), as
#: ``((south, north), (west, east), zone)``: south-western Norway lies in zone 32 and
#: Svalbard in the odd zones 31-37. PROJ's database, and so geopandas'
#: ``estimate_utm_crs``, knows only the 6° zones.
UTM_EXCEPTIONS = (
    ((56.0, 64.0), (3.0, 12.0), 32),
    ((72.0, 84.0), (0.0, 9.0), 31),
    ((72.0, 84.0), (9.0, 21.0), 33),
    ((72.0, 84.0), (21.0, 33.0), 35),
    ((72.0, 84.0), (33.0, 42.0), 37),
)


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone holding a point; UPS beyond UTM's 84°N and 80°S."""
    for (south, north), (west, east), zone in UTM_EXCEPTIONS:
        if south <= lat < north and west <= lon < east:
            return CRS.from_epsg(32600 + zone)
    point = AreaOfInterest(lon, lat, lon, lat)
    found = query_utm_crs_info(datum_name="WGS 84", area_of_interest=point)
    if found:
        return CRS.from_epsg(int(found[0].code))
    return CRS.from_epsg(5041 if lat > 0 else 5042)  # UPS North / South (E,N)


def grid_crs(crs: CRS, lonlat_bounds: tuple[float, float, float, float]) -> CRS:
    """``crs`` itself when it is projected in metres, else the UTM zone of the centre."""
    if is_planar_metric(crs) and crs.axis_info[0].unit_conversion_factor == 1.0:
        return crs
    west, south, east, north = lonlat_bounds
    return utm_crs((west + east) / 2, (south + north) / 2)


def make_grid(crs: CRS, transform: Affine, width: int, height: int, size_m: float) -> ZoneGrid:
    """The grid of ``size_m`` cells covering a raster (cells on multiples of the size)."""
    if not size_m > 0:
        raise InputError(f"grid size {size_m!r} m: expected a positive number of metres")
    left, bottom, right, top = rasterio.transform.array_bounds(height, width, transform)
    lonlat = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    target = grid_crs(crs, lonlat.transform_bounds(left, bottom, right, top, densify_pts=21))
    to_grid = Transformer.from_crs(crs, target, always_xy=True)
    gl, gb, gr, gt = to_grid.transform_bounds(left, bottom, right, top, densify_pts=21)
    x0 = math.floor(gl / size_m) * size_m
    y0 = math.ceil(gt / size_m) * size_m
    grid = ZoneGrid(
        target,
        float(size_m),
        x0,
        y0,
        max(1, math.ceil((gr - x0) / size_m)),
        max(1, math.ceil((y0 - gb) / size_m)),
    )
    if grid.n_cells > MAX_GRID_CELLS:
        raise InputError(
            f"--grid {size_m} m splits the raster into {grid.n_cells} cells "
            f"(more than {MAX_GRID_CELLS}); choose a larger cell size"
        )
    return grid


def grid_labeller(grid: ZoneGrid, crs: CRS, transform: Affine) -> ZoneLabeller:
    """A zone labeller giving each pixel the index of the grid cell holding its centre."""
    to_grid = None if grid.crs == crs else Transformer.from_crs(crs, grid.crs, always_xy=True)

    def label(window: Window) -> np.ndarray:
        a, b, c, d, e, f = (transform @ Affine.translation(window.col_off, window.row_off))[:6]
        cols = np.arange(int(window.width)) + 0.5
        rows = np.arange(int(window.height)) + 0.5
        if to_grid is None and b == d == 0:
            # North-up in the grid's CRS: x depends on the column only, y on the row only.
            col = grid.cell_index(a * cols + c, np.full(cols.shape, grid.top - grid.size / 2))
            row = grid.cell_index(np.full(rows.shape, grid.left + grid.size / 2), e * rows + f)
            return np.where((row[:, None] < 0) | (col[None, :] < 0), -1, row[:, None] + col)
        cc, rr = np.meshgrid(cols, rows)
        x, y = a * cc + b * rr + c, d * cc + e * rr + f
        if to_grid is not None:
            x, y = to_grid.transform(x, y)
        return grid.cell_index(np.asarray(x), np.asarray(y))

    return label


def grid_zones(
    classes_path: Path,
    classes: ClassList,
    size_m: float,
    block_size: int = 2048,
    indices: IndexReader | None = None,
) -> gpd.GeoDataFrame:
    """Management-zone grid: per-cell class shares and weed pressure.

    Only cells holding valid pixels are returned.

    Returns:
        Columns ``zone_id``, ``row``, ``col``, ``area_m2`` (valid ground area),
        ``<class>_share`` per class, ``weed_pressure``, ``disease_incidence``,
        ``health_score`` (NaN where undefined), ``mean_<index>`` for each vegetation
        index of ``indices`` and the cell polygons, in the grid CRS.
    """
    with rasterio.open(classes_path) as src:
        crs = raster_crs(src, classes_path)
        transform, width, height = src.transform, src.width, src.height
    grid = make_grid(crs, transform, width, height, size_m)
    zoning = Zoning(grid_labeller(grid, crs, transform), grid.n_cells)
    areas, means = _measure(classes_path, (height, width), classes, zoning, block_size, indices)
    return zone_frame(grid, classes, areas, means, indices)


def zone_frame(
    grid: ZoneGrid,
    classes: ClassList,
    areas: np.ndarray,
    means: np.ndarray | None = None,
    indices: IndexReader | None = None,
) -> gpd.GeoDataFrame:
    """The zone layer (see :func:`grid_zones`) from each cell's class areas (and index
    means)."""
    total = areas.sum(axis=1)
    used = np.flatnonzero(total > 0)
    areas, total = areas[used], total[used]
    health = health_indices(areas, classes)
    columns: dict[str, Any] = {
        "zone_id": used,
        "row": used // grid.n_cols,
        "col": used % grid.n_cols,
        "area_m2": total,
    }
    for c in classes:
        columns[f"{c.name}_share"] = areas[:, c.id] / total
    for name in ("weed_pressure", "disease_incidence", "health_score"):
        columns[name] = health[name]
    if means is not None and indices is not None:
        for k, name in enumerate(indices.names):
            columns[f"mean_{name}"] = np.round(means[used, k], 4)
    return gpd.GeoDataFrame(columns, geometry=grid.cells(used), crs=grid.crs)


#: A grid zone imaging less than this share of a full cell is a sliver (a cell the
#: survey's edge barely enters): it joins a neighbouring zone rather than getting a
#: rate of its own from a few pixels.
MIN_ZONE_SHARE = 0.25

_ROOK = ((-1, 0), (1, 0), (0, -1), (0, 1))


def join_slivers(
    zones: gpd.GeoDataFrame, classes: ClassList, min_share: float = MIN_ZONE_SHARE
) -> gpd.GeoDataFrame:
    """The zone layer (see :func:`grid_zones`) with each sliver joined to the zone of its
    edge neighbour imaging most (smallest slivers first, so a corner joins the strip
    that joins a whole cell); a joined zone's statistics are those of its pooled class
    areas.

    The result keeps the zone id, row and col of the largest cell of each group and
    counts its cells in ``cells``.
    """
    cell_m2 = float(shapely.area(zones.geometry.to_numpy()).max()) if len(zones) else 0.0
    area = zones["area_m2"].to_numpy(dtype="float64")
    rows, cols = zones["row"].to_numpy(dtype="int64"), zones["col"].to_numpy(dtype="int64")
    where = {(r, c): k for k, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))}
    group = np.arange(len(zones))
    members = {k: [k] for k in range(len(zones))}  # group -> its cells
    total = dict(enumerate(area.tolist()))  # group -> its imaged area
    slivers = np.flatnonzero(area < min_share * cell_m2)
    for k in slivers[np.argsort(area[slivers], kind="stable")]:
        mine = int(group[k])
        if total[mine] >= min_share * cell_m2:
            continue  # a smaller sliver joined it and made it whole enough
        edge = [(rows[m] + dr, cols[m] + dc) for m in members[mine] for dr, dc in _ROOK]
        near = [where[rc] for rc in edge if rc in where and group[where[rc]] != mine]
        if near:
            # the neighbouring cell imaging most (not the largest group: a group grown
            # from slivers would swallow a whole edge of them)
            target = int(group[max(near, key=lambda m: area[m])])
            group[members[mine]] = target
            members[target] += members.pop(mine)
            total[target] += total.pop(mine)
    out = zones.assign(cells=np.ones(len(zones), dtype="int32")).reset_index(drop=True)
    joined = [np.array(cells) for cells in members.values() if len(cells) > 1]
    if not joined:
        return out
    shares = [f"{c.name}_share" for c in classes]
    means = [str(c) for c in zones.columns if str(c).startswith("mean_")]
    columns = {n: out[n].to_numpy(dtype="float64", copy=True) for n in ["area_m2", *shares, *means]}
    geometry, cells_of = out.geometry.to_numpy().copy(), out["cells"].to_numpy(copy=True)
    indices: dict[str, np.ndarray] = {}
    heads = []
    for cells in joined:
        head = cells[np.argmax(area[cells])]
        heads.append(head)
        pooled = np.zeros(len(classes))
        for c in classes:
            pooled[c.id] = np.nansum(columns[f"{c.name}_share"][cells] * area[cells])
        columns["area_m2"][head] = pooled.sum()
        for c in classes:
            columns[f"{c.name}_share"][head] = pooled[c.id] / pooled.sum()
        for name, value in health_indices(pooled[None], classes).items():
            if name in zones.columns:
                column = out[name].to_numpy(dtype="float64", copy=True)
                indices.setdefault(name, column)[head] = value[0]
        for name in means:
            values, weights = columns[name][cells], area[cells]
            ok = np.isfinite(values) & (weights > 0)
            columns[name][head] = (
                np.average(values[ok], weights=weights[ok]) if ok.any() else np.nan
            )
        cells_of[head] = len(cells)
        geometry[head] = shapely.union_all(geometry[cells])
    out = out.assign(**columns, **indices, cells=cells_of)
    out = out.set_geometry(gpd.GeoSeries(geometry, crs=zones.crs))
    gone = np.setdiff1d(np.concatenate(joined), heads)
    return out.drop(index=gone).reset_index(drop=True)

"""Joining a strip's polygonised panes, and strips, across their seams.

Panes are polygonised independently (:func:`agriseg.health.pane_polygons.run_pane`,
anywhere); :class:`StripPolygons` joins them strip by strip, in order: a region cut
by pane or strip seams becomes one polygon, the exact union of its parts, as soon
as the strips below can no longer reach it, so memory stays bounded by the open
regions along the last seam.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from agriseg.health.pane_polygons import PanePolygons, PolygonSettings, ValueReader, run_pane
from agriseg.health.panes import pane_tasks
from agriseg.health.polygon_batch import POLYGON_COLUMNS, PolygonBatch
from agriseg.health.strips import Strip


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes joined by index ``pairs`` (k × 2)."""
    if n == 0:
        return np.empty(0, dtype="int64")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype("int64")


def _merge_groups(parts: PolygonBatch, roots: np.ndarray) -> PolygonBatch:
    """One polygon per group of ``parts`` with the same root: the union of its members."""
    order = np.argsort(roots, kind="stable")
    uniq, starts = np.unique(roots[order], return_index=True)
    groups = np.split(order, starts[1:])
    geometry = np.empty(len(uniq), dtype=object)
    for k, members in enumerate(groups):
        geometry[k] = (
            parts.geometry[members[0]]
            if len(members) == 1
            else union_parts(parts.geometry[members])
        )
    first = np.array([g[0] for g in groups], dtype="int64")
    return PolygonBatch(
        geometry,
        parts.class_id[first],
        *(
            np.add.reduceat(getattr(parts, name)[order], starts, axis=0)
            for name in POLYGON_COLUMNS[2:]
        ),
    )


def union_parts(parts: np.ndarray) -> shapely.Polygon:
    """The polygon of one region from its parts, cut out of it by pane and strip seams.

    Parts lie in disjoint windows, so a part's holes never reach a seam and stay holes
    of the region whatever its neighbours are: only the outer rings are unioned, and
    the parts' holes are put back as they are. That is the same polygon as
    ``shapely.union_all(parts)`` (tested), at a fraction of the cost: a field-wide soil
    region with thousands of holes (4096² survey, 1.6M vertices) took 6.7 s and 480 MB
    to union whole, 0.5 s as outer rings.
    """
    outer = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(parts)))
    if outer.geom_type != "Polygon":  # parts of one region always meet along edges
        return shapely.union_all(parts)
    rings, owner = shapely.get_rings(parts, return_index=True)
    is_hole = np.ones(len(rings), dtype=bool)
    is_hole[np.unique(owner, return_index=True)[1]] = False  # each part's exterior comes first
    holes = [*outer.interiors, *rings[is_hole]]
    return shapely.Polygon(outer.exterior, holes)


def _seam_pairs(
    a: np.ndarray, b: np.ndarray, class_id: np.ndarray, whole: np.ndarray
) -> np.ndarray:
    """Pairs of part indexes (1-based) facing each other across a seam with the same class,
    of a class whose regions are joined across seams (``whole``, a boolean per class id)."""
    both = (a > 0) & (b > 0)
    a, b = a[both] - 1, b[both] - 1
    same = (class_id[a] == class_id[b]) & whole[class_id[a]]
    return np.unique(np.column_stack([a[same], b[same]]), axis=0)


#: Every class joined across a seam.
_EVERY_CLASS = np.ones(256, dtype=bool)


def _shifted(labels: np.ndarray, by: int) -> np.ndarray:
    """A pane's part labels (index + 1, 0: none) as indexes among parts numbered from ``by``."""
    return np.where(labels > 0, labels + by, 0)


class StripPolygons:
    """Polygons of a class raster fed strip by strip (top to bottom), in pixel coordinates.

    Each strip is cut into panes of ``pane_size`` columns and polygonised pane by
    pane (:func:`run_pane`, which may run anywhere). A region cut by pane or strip
    seams comes out in parts; parts are joined where same-class pixels face each other
    across a seam (pixel adjacency, not geometry, decides), and each region's parts
    are unioned once, when no part of it reaches the strip's last row any more.
    :meth:`add_panes` returns the regions a strip finished, so the cost stays linear
    in the raster whatever the strip height.

    Regions of the classes not in ``whole`` (a boolean per class id; None: every
    class) are not joined across the edges of the grid of ``pane_size`` square cells
    (from the raster's top-left corner; strips may be shorter than a cell), so none
    of their polygons outgrows a cell.

    ``values`` reads ``n_values`` per-pixel values (vegetation indices) of a pane's
    window; their sums and counts per polygon come with the polygons.
    """

    def __init__(
        self,
        height: int,
        width: int,
        pane_size: int,
        values: ValueReader | None = None,
        n_values: int = 0,
        whole: np.ndarray | None = None,
    ) -> None:
        self._height = height
        self._width = width
        self._pane_size = pane_size
        self._settings = PolygonSettings(None, values, n_values if values is not None else 0)
        self._whole = np.ones(256, dtype=bool) if whole is None else whole
        self._carry = PolygonBatch.empty(self._settings.n_values)  # parts of regions still open
        self._carry_root = np.empty(0, dtype="int64")  # region of each carried part
        self._carry_row = np.zeros(width, dtype="int64")  # last row: carried part + 1

    def add(self, classes: np.ndarray, confidence: np.ndarray | None, row_off: int) -> PolygonBatch:
        """Polygonise strip rows ``classes`` starting at ``row_off``; return the finished ones."""
        strip = Strip(row_off, classes.shape[0], classes, 0, confidence)
        found = [run_pane(task, self._settings) for task in pane_tasks(strip, 0, self._pane_size)]
        return self.add_panes(found)

    def add_empty(self) -> PolygonBatch:
        """Take a strip without a valid pixel (what :meth:`add_panes` does with its panes,
        without them): every region still open is finished."""
        carry, count = self._carry, len(self._carry)
        region = _components(count, np.column_stack([np.arange(count), self._carry_root]))
        self._carry = PolygonBatch.empty(self._settings.n_values)
        self._carry_root = np.empty(0, dtype="int64")
        self._carry_row = np.zeros(self._width, dtype="int64")
        return _merge_groups(carry, region) if count else carry

    def add_panes(self, found: list[PanePolygons]) -> PolygonBatch:
        """Join the polygonised panes of the next strip (left to right) to the regions
        still open above it; return the regions this strip finished."""
        window = found[0].window
        top, bottom = int(window.row_off), int(window.row_off + window.height)
        parts = [self._carry]
        count = len(self._carry)
        first_row = np.zeros(self._width, dtype="int64")
        last_row = np.zeros(self._width, dtype="int64")
        seams = [(self._carry_row, first_row)]  # pixels facing each other: part index + 1
        previous_column: np.ndarray | None = None
        for pane in found:
            left, right = int(pane.window.col_off), int(pane.window.col_off + pane.window.width)
            parts.append(pane.polygons)
            first_row[left:right] = _shifted(pane.top, count)
            last_row[left:right] = _shifted(pane.bottom, count)
            if previous_column is not None:
                seams.append((previous_column, _shifted(pane.left, count)))
            previous_column = _shifted(pane.right, count)
            count += len(pane.polygons)
        pool = PolygonBatch.concat(parts)
        links = [np.column_stack([np.arange(len(self._carry)), self._carry_root])]
        # Cut classes are cut at cell edges only: strips may be shorter than a cell.
        joined = [self._whole if top % self._pane_size == 0 else _EVERY_CLASS]
        joined += [self._whole] * (len(seams) - 1)  # the rest are pane (= cell) columns
        links += [
            _seam_pairs(a, b, pool.class_id, j) for (a, b), j in zip(seams, joined, strict=True)
        ]
        region = _components(count, np.concatenate(links))
        if bottom < self._height:
            is_open = np.isin(region, region[last_row[last_row > 0] - 1])
            if bottom % self._pane_size == 0:
                is_open &= self._whole[pool.class_id]
        else:
            is_open = np.zeros(count, dtype=bool)
        done = ~is_open
        finished = _merge_groups(pool.take(done), region[done]) if done.any() else pool.take(done)
        # Carry the open parts, renumbered, with their region's first part and the last row.
        kept = np.flatnonzero(is_open)
        renumber = np.zeros(count + 1, dtype="int64")
        renumber[kept + 1] = np.arange(1, len(kept) + 1)
        regions, first = np.unique(region[kept], return_index=True)
        self._carry = pool.take(kept)
        self._carry_root = first[np.searchsorted(regions, region[kept])]
        self._carry_row = renumber[last_row]
        return finished

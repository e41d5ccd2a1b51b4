"""Pane-wise sieving and vectorising: exactness, seams, holes, simplification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from conftest import UTM, UTM_TRANSFORM, write_raster
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import CRS
from rasterio.features import rasterize, shapes
from scipy import ndimage

from agriseg.classes import NODATA
from agriseg.health.geojson import rounding_keeps_lattice_polygons_valid, to_rfc7946
from agriseg.health.pane_polygons import polygons_from_geojson
from agriseg.health.panes import sieve_raster, sieve_size
from agriseg.health.polygon_batch import PolygonBatch
from agriseg.health.seams import union_parts
from agriseg.health.vectorize import vectorize


def blocky(height: int, width: int, cell: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """Classes in ``cell``-px squares with speckle and a nodata corner."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 4, (height // cell + 1, width // cell + 1), dtype="uint8")
    data = grid.repeat(cell, 0).repeat(cell, 1)[:height, :width].copy()
    speck = rng.random((height, width)) < noise
    data[speck] = rng.integers(0, 4, int(speck.sum()))
    data[: height // 5, : width // 4] = NODATA
    return data


def write_classes(path: Path, data: np.ndarray, **kwargs) -> Path:
    return write_raster(path, data[None], nodata=NODATA, block=16, **kwargs)


def polygons(path: Path, **kwargs) -> PolygonBatch:
    return PolygonBatch.concat(vectorize(path, **kwargs))


def burn(batch: PolygonBatch, shape: tuple[int, int]) -> np.ndarray:
    if not len(batch):
        return np.full(shape, NODATA, dtype="uint8")
    return rasterize(
        zip(batch.geometry, batch.class_id.astype(int), strict=True),
        out_shape=shape,
        transform=UTM_TRANSFORM,
        fill=NODATA,
        dtype="uint8",
    )


def same_class_shared_edges(batch: PolygonBatch) -> int:
    tree = shapely.STRtree(batch.geometry)
    a, b = tree.query(batch.geometry, predicate="intersects")
    pick = (a < b) & (batch.class_id[a] == batch.class_id[b])
    common = shapely.intersection(batch.geometry[a[pick]], batch.geometry[b[pick]])
    return int((shapely.length(common) > 0).sum() + (shapely.area(common) > 0).sum())


def check_polygons(batch: PolygonBatch, data: np.ndarray) -> None:
    assert shapely.is_valid(batch.geometry).all()
    assert same_class_shared_edges(batch) == 0
    assert (burn(batch, data.shape) == data).mean() >= 0.99
    assert batch.pixels.sum() == (data != NODATA).sum()


@pytest.mark.parametrize("pane_size", [16, 37, 1000])
def test_polygons_reproduce_raster_across_panes(tmp_path: Path, pane_size: int) -> None:
    data = blocky(150, 130, 10, seed=1)
    path = write_classes(tmp_path / "c.tif", data)
    batch = polygons(path, pane_size=pane_size)
    check_polygons(batch, data)
    assert (burn(batch, data.shape) == data).all()


def test_seams_merge_into_one_polygon_with_holes(tmp_path: Path) -> None:
    data = np.ones((96, 96), dtype="uint8")
    data[20:70, 20:70] = 0  # a soil hole crossing several 16-px pane seams
    data[40:45, 40:45] = 2  # a weed island in the hole
    path = write_classes(tmp_path / "c.tif", data)
    batch = polygons(path, pane_size=16)
    crop = batch.geometry[batch.class_id == 1]
    assert len(crop) == 1 and len(crop[0].interiors) == 1
    soil = batch.geometry[batch.class_id == 0]
    assert len(soil) == 1 and len(soil[0].interiors) == 1
    assert len(batch) == 3
    check_polygons(batch, data)


def test_corner_touching_regions_stay_apart(tmp_path: Path) -> None:
    data = np.zeros((32, 32), dtype="uint8")
    data[:16, :16] = 1
    data[16:, 16:] = 1  # touches the first crop square at one corner, on a pane corner
    path = write_classes(tmp_path / "c.tif", data)
    batch = polygons(path, pane_size=16)
    assert (batch.class_id == 1).sum() == 2
    check_polygons(batch, data)


def test_mean_confidence_is_the_mean_of_the_polygon_pixels(tmp_path: Path) -> None:
    data = blocky(64, 48, 8, seed=2, noise=0.0)
    conf = np.random.default_rng(3).integers(0, 101, data.shape).astype("uint8")
    conf[0, 40] = NODATA
    classes = write_classes(tmp_path / "c.tif", data)
    confidence = write_classes(tmp_path / "p.tif", conf)
    batch = polygons(classes, confidence_path=confidence, pane_size=16)
    for k, mean in enumerate(batch.mean_confidence):
        inside = burn(batch.take(np.array([k])), data.shape) != NODATA
        assert mean == pytest.approx(conf[inside & (conf != NODATA)].mean())


def test_all_nodata_gives_no_polygons(tmp_path: Path) -> None:
    path = write_classes(tmp_path / "c.tif", np.full((40, 40), NODATA, dtype="uint8"))
    assert len(polygons(path, pane_size=16)) == 0


def test_sieve_removes_regions_below_the_minimum(tmp_path: Path) -> None:
    data = blocky(120, 100, 12, seed=4, noise=0.08)
    data[60:62, 0:30] = 2  # a long thin strip crossing a pane seam: 60 px, kept
    src = write_classes(tmp_path / "c.tif", data)
    dst = tmp_path / "s.tif"
    size = sieve_size(min_area_m2=0.0036, pixel_area_m2=0.0004)
    assert size == 9
    sieve_raster(src, dst, size, pane_size=32)
    with rasterio.open(dst) as ds:
        sieved = ds.read(1)
        assert ds.profile["nodata"] == NODATA and ds.crs == "EPSG:32633"
    assert ((sieved == NODATA) == (data == NODATA)).all()
    batch = polygons(dst, pane_size=32)
    assert batch.pixels.min() >= size
    assert (sieved[60:62, 0:30] == 2).all()
    check_polygons(batch, sieved)


def test_simplify_keeps_a_valid_gapless_coverage(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    data = ((np.hypot(yy - 64, xx - 64) // 14) % 4).astype("uint8")  # concentric rings
    path = write_classes(tmp_path / "c.tif", data)
    exact = polygons(path, pane_size=32)
    simple = polygons(path, pane_size=32, simplify_px=1.5)
    assert len(simple) == len(exact)
    assert shapely.is_valid(simple.geometry).all()
    assert shapely.coverage_is_valid(simple.geometry)
    assert (
        shapely.get_num_coordinates(simple.geometry).sum()
        < shapely.get_num_coordinates(exact.geometry).sum()
    )
    # The outline is kept, so the simplified pieces still tile exactly the same area.
    outline = shapely.union_all(exact.geometry)
    assert shapely.union_all(simple.geometry).symmetric_difference(outline).area < 1e-9
    assert shapely.area(simple.geometry).sum() == pytest.approx(outline.area)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=arrays(
        "uint8",
        st.tuples(st.integers(4, 40), st.integers(4, 40)),
        elements=st.sampled_from([0, 1, 2, 3, NODATA]),
    ),
    pane_size=st.integers(3, 17),
)
def test_property_random_rasters(tmp_path: Path, data: np.ndarray, pane_size: int) -> None:
    path = write_classes(tmp_path / "h.tif", data)
    check_polygons(polygons(path, pane_size=pane_size), data)


def test_polygons_from_geojson_matches_shapely_shape() -> None:
    shell = shapely.box(0, 0, 10, 10)
    holed = shell.difference(shapely.box(2, 2, 4, 4)).difference(shapely.box(6, 6, 8, 9))
    sources = [holed, shapely.box(20, 0, 21, 1), shapely.Polygon([(0, 0), (3, 0), (0, 3)])]
    mappings = [shapely.geometry.mapping(p) for p in sources]
    built = polygons_from_geojson(mappings)
    assert len(built) == 3 and all(shapely.equals_exact(built, np.array(sources), 0))
    assert [len(p.interiors) for p in built] == [2, 0, 0]
    assert len(polygons_from_geojson([])) == 0


def _narrowest_safe_gsd(transform_for) -> float:
    """Smallest pixel size (m) for which plain GeoJSON rounding is declared safe."""
    lo, hi = 0.001, 0.1
    for _ in range(40):
        mid = (lo + hi) / 2
        ok = rounding_keeps_lattice_polygons_valid(CRS(UTM), transform_for(mid), 64, 64)
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi


def _north_up(gsd: float) -> Affine:
    return Affine(gsd, 0.0, 500000.0, 0.0, -gsd, 5300000.0)


def _rotated(gsd: float) -> Affine:
    return Affine.translation(500000.0, 5300000.0) * Affine.rotation(37) * Affine.scale(gsd, -gsd)


def test_plain_rounding_is_declared_safe_only_for_coarse_enough_pixels() -> None:
    check = rounding_keeps_lattice_polygons_valid
    assert check(CRS(UTM), _north_up(0.03), 4096, 4096)
    assert not check(CRS(UTM), _north_up(0.01), 4096, 4096)
    assert not check(CRS(4326), Affine(1e-7, 0, 15, 0, -1e-7, 47), 100, 100)
    assert check(CRS(4326), Affine(5e-7, 0, 15, 0, -5e-7, 47), 100, 100)
    # Near the limit the answer is about 1.7 cm at 47.8° N in UTM 33N.
    assert 0.012 < _narrowest_safe_gsd(_north_up) < 0.02


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=arrays(
        "uint8",
        st.tuples(st.integers(2, 30), st.integers(2, 30)),
        elements=st.sampled_from([0, 1, 2, NODATA]),
    ),
    rotated=st.booleans(),
)
def test_plain_rounding_keeps_polygons_valid_at_the_declared_limit(
    tmp_path: Path, data: np.ndarray, rotated: bool
) -> None:
    """At the smallest pixel size declared safe, rounded GeoJSON geometries stay valid."""
    transform_for = _rotated if rotated else _north_up
    transform = transform_for(_narrowest_safe_gsd(transform_for) * 1.001)
    path = write_classes(tmp_path / "r.tif", data, transform=transform)
    batch = polygons(path, pane_size=7)
    if not len(batch):
        return
    rounded = to_rfc7946(batch.geometry, CRS(UTM), snap_safely=False)
    assert shapely.is_valid(rounded).all() and not shapely.is_empty(rounded).any()
    assert np.allclose(shapely.area(rounded), shapely.area(to_rfc7946(batch.geometry, CRS(UTM))))


@settings(max_examples=40, deadline=None)
@given(
    mask=arrays("bool", st.tuples(st.integers(6, 48), st.integers(6, 48)), elements=st.booleans()),
    pane=st.integers(3, 20),
)
def test_union_parts_is_the_union_of_a_regions_pane_parts(mask: np.ndarray, pane: int) -> None:
    # The largest 4-connected region, cut into its pieces in each pane, as a run cuts it.
    found, count = ndimage.label(mask)
    assume(count > 0)
    region = found == np.argmax(np.bincount(found.ravel())[1:]) + 1
    parts = []
    for top in range(0, mask.shape[0], pane):
        for left in range(0, mask.shape[1], pane):
            window = region[top : top + pane, left : left + pane].astype("uint8")
            offset = Affine.translation(left, top)
            parts += [
                shapely.geometry.shape(g)
                for g, _ in shapes(window, mask=window > 0, connectivity=4, transform=offset)
            ]
    parts_array = np.asarray(parts, dtype=object)
    united = union_parts(parts_array)
    assert united.geom_type == "Polygon" and united.is_valid
    assert united.equals(shapely.union_all(parts_array))
    assert united.area == region.sum()


@pytest.mark.parametrize("strip_rows", [8, 16, 32])
def test_cut_classes_stay_in_their_cells_whatever_the_strip_height(strip_rows: int) -> None:
    from agriseg.health.seams import StripPolygons

    data = blocky(96, 80, 10, seed=6)
    whole = np.ones(256, dtype=bool)
    whole[[0, 1]] = False  # soil and crop are cut on the 32-px cells; 2 and 3 stay whole
    polygons = StripPolygons(96, 80, 32, whole=whole)
    found = PolygonBatch.concat(
        polygons.add(data[row : row + strip_rows], None, row) for row in range(0, 96, strip_rows)
    )
    # Pixel coordinates: bounds are pixel edges.
    bounds = shapely.bounds(found.geometry)
    in_one_cell = (bounds[:, 0] // 32 == (bounds[:, 2] - 1) // 32) & (
        bounds[:, 1] // 32 == (bounds[:, 3] - 1) // 32
    )
    cut = np.isin(found.class_id, [0, 1])
    assert in_one_cell[cut].all() and not in_one_cell[~cut].all()
    assert shapely.is_valid(found.geometry).all() and found.pixels.sum() == (data != NODATA).sum()
    # Within a cell, a cut region is one polygon: the same as with cell-high strips.
    reference = StripPolygons(96, 80, 32, whole=whole)
    expected = PolygonBatch.concat(reference.add(data[r : r + 32], None, r) for r in (0, 32, 64))

    def canonical(batch: PolygonBatch) -> np.ndarray:
        centroid = shapely.centroid(batch.geometry)
        x, y = shapely.get_x(centroid), shapely.get_y(centroid)
        return batch.geometry[np.lexsort((y, x, batch.pixels, batch.class_id))]

    assert len(found) == len(expected)
    assert shapely.equals(canonical(found), canonical(expected)).all()


@pytest.mark.parametrize(("sieve_px", "pane_size"), [(9, 16), (1, 16), (40, 37)])
def test_a_pane_read_from_the_files_is_the_pane_cut_from_its_strip(
    tmp_path: Path, sieve_px: int, pane_size: int
) -> None:
    # Halos clipped at the raster's edges, a last narrow pane, no halo without sieving.
    from agriseg.health.panes import file_pane_tasks, pane_tasks, sieve_halo
    from agriseg.health.strips import raster_file_strips

    data = blocky(70, 90, 6, seed=3)
    classes = write_classes(tmp_path / "c.tif", data)
    conf = write_raster(tmp_path / "p.tif", (data % 100)[None].astype("uint8"), block=16)
    halo = sieve_halo(sieve_px, pane_size)
    for strip in raster_file_strips(classes, conf, pane_size, halo):
        from_files = [t.read() for t in file_pane_tasks(strip, sieve_px, pane_size)]
        cut = pane_tasks(strip.read(), sieve_px, pane_size)
        assert len(from_files) == len(cut) > 0
        for a, b in zip(from_files, cut, strict=True):
            assert (a.window, a.top, a.left, a.sieve_px) == (b.window, b.top, b.left, b.sieve_px)
            assert np.array_equal(a.classes, b.classes)
            assert np.array_equal(a.confidence, b.confidence)
            assert np.array_equal(a.sieved(), b.sieved())


def test_polygons_pickle_as_coordinate_arrays_and_come_back_bit_for_bit() -> None:
    import pickle

    from agriseg.health.polygon_batch import PicklePolygons

    holed = shapely.Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (2, 3.5), (3.25, 3.5), (3.25, 2)]]
    )
    polygons = np.array([holed, shapely.box(1e6 + 0.1, 2e6, 1e6 + 0.3, 2e6 + 7e-7)])
    back = pickle.loads(pickle.dumps(PicklePolygons(polygons)))
    assert isinstance(back, np.ndarray) and len(back) == 2
    assert shapely.equals_exact(back, polygons, 0).all()
    assert [list(shapely.get_coordinates(g).ravel()) for g in back] == [
        list(shapely.get_coordinates(g).ravel()) for g in polygons
    ]
    # Anything else (missing, empty, other types, no polygons) pickles as it is.
    for other in (
        np.array([holed, None]),
        np.array([holed, shapely.Polygon()]),
        np.array([shapely.Point(1, 2)]),
        np.empty(0, dtype=object),
    ):
        again = pickle.loads(pickle.dumps(PicklePolygons(other)))
        assert len(again) == len(other)
        assert all(
            (a is None and b is None) or shapely.equals_exact(a, b, 0)
            for a, b in zip(again, other, strict=True)
        )


def test_an_empty_strip_closes_the_open_regions_as_a_nodata_strip_would() -> None:
    from agriseg.health.seams import StripPolygons

    data = blocky(96, 80, 10, seed=7)
    data[32:48] = NODATA  # rows no valid pixel reaches: regions above them end there
    batches = {}
    for empty in (False, True):
        polygons = StripPolygons(96, 80, 32)
        found = []
        for row in range(0, 96, 16):
            if empty and row == 32:
                found.append(polygons.add_empty())
            else:
                found.append(polygons.add(data[row : row + 16], None, row))
        batches[empty] = found
    assert len(batches[True][2]) > 3  # regions of rows 0-31 finished at the empty strip
    for a, b in zip(batches[False], batches[True], strict=True):
        assert len(a) == len(b)
        assert shapely.equals(a.geometry, b.geometry).all()
        assert np.array_equal(a.class_id, b.class_id) and np.array_equal(a.pixels, b.pixels)

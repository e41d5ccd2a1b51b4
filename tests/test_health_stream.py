"""The health pass streamed beside the segmentation gives the same products as afterwards."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import field_image, write_raster
from rasterio.windows import Window

from agriseg.classes import NODATA
from agriseg.config import RunConfig
from agriseg.health.health_stream import HealthStream
from agriseg.health.products import ClassRaster, HealthOptions, plan_health, write_health_products
from agriseg.health.strips import StripAssembler, file_strips
from agriseg.health.task_runner import PARALLEL_MIN_PX, default_workers, run_inline, task_runner
from agriseg.run import segment_raster


def scrambled_blocks(height: int, width: int, edge: int, seed: int) -> list[Window]:
    """Blocks of ``edge`` px, block rows in order, blocks within a row shuffled."""
    rng = np.random.default_rng(seed)
    out = []
    for row in range(0, height, edge):
        windows = [
            Window(col, row, min(edge, width - col), min(edge, height - row))
            for col in range(0, width, edge)
        ]
        out += [windows[k] for k in rng.permutation(len(windows))]
    return out


@pytest.mark.parametrize(("strip", "halo", "edge"), [(16, 5, 7), (64, 0, 48), (10, 25, 13)])
def test_assembled_strips_equal_the_strips_read_from_the_file(
    tmp_path: Path, strip: int, halo: int, edge: int
) -> None:
    rng = np.random.default_rng(strip + halo)
    classes = rng.choice([0, 1, 2, 3, NODATA], (70, 45)).astype("uint8")
    confidence = rng.integers(0, 101, classes.shape, dtype="uint8")
    write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    write_raster(tmp_path / "p.tif", confidence[None], nodata=NODATA, block=16)
    assembler = StripAssembler(70, 45, strip, halo)
    streamed = []
    for w in scrambled_blocks(70, 45, edge, seed=1):
        rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        streamed += assembler.add(w, classes[rows, cols], confidence[rows, cols])
    assert assembler.done
    expected = list(file_strips(tmp_path / "c.tif", tmp_path / "p.tif", strip, halo))
    assert len(streamed) == len(expected) == -(-70 // strip)
    for got, want in zip(streamed, expected, strict=True):
        assert (got.row_off, got.height, got.above) == (want.row_off, want.height, want.above)
        assert np.array_equal(got.classes, want.classes)
        assert np.array_equal(got.confidence, want.confidence)


@pytest.mark.parametrize(("strip", "halo"), [(8, 3), (16, 0)])
def test_strips_of_nodata_blocks_are_empty_and_hold_no_memory(
    tmp_path: Path, strip: int, halo: int
) -> None:
    # Valid pixels only in rows 40-55: blocks outside them come as nodata (None).
    rng = np.random.default_rng(strip)
    classes = np.full((96, 45), NODATA, dtype="uint8")
    classes[40:56, 5:30] = rng.choice([0, 1, 2, 3], (16, 25))
    confidence = np.where(classes == NODATA, NODATA, 70).astype("uint8")
    write_raster(tmp_path / "c.tif", classes[None], nodata=NODATA, block=16)
    write_raster(tmp_path / "p.tif", confidence[None], nodata=NODATA, block=16)
    assembler = StripAssembler(96, 45, strip, halo)
    streamed = []
    for w in scrambled_blocks(96, 45, 13, seed=2):
        rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        if (classes[rows, cols] == NODATA).all():
            streamed += assembler.add(w)
        else:
            streamed += assembler.add(w, classes[rows, cols], confidence[rows, cols])
    expected = list(file_strips(tmp_path / "c.tif", tmp_path / "p.tif", strip, halo))
    assert len(streamed) == len(expected)
    empties = 0
    for got, want in zip(streamed, expected, strict=True):
        assert np.array_equal(got.classes, want.classes)
        assert np.array_equal(got.confidence, want.confidence)
        # Blocks are 13 rows: a strip is known empty when no block with data reached it.
        reached = range(39, 65)  # rows 39-64: the blocks starting at rows 39 and 52
        top, bottom = got.row_off - got.above, got.row_off - got.above + len(got.classes)
        assert got.empty == (max(top, reached.start) >= min(bottom, reached.stop))
        if got.empty:
            empties += 1
            assert got.classes.strides == (0, 0)  # nodata taking no memory
    assert empties >= 96 // strip - 5


def test_run_streams_the_same_products_as_a_pass_over_the_finished_rasters(
    tmp_path: Path,
) -> None:
    image = write_raster(tmp_path / "plot.tif", field_image(200, 240, seed=3))
    # Small panes: many strips and seams, so the streamed pass really runs in pieces.
    options = HealthOptions(pane_size=48, min_area_m2=0.004)
    config = RunConfig(device="cpu", tile_size=128, overlap=32, health=options, stream_health=True)
    result = segment_raster(image, tmp_path / "run", config)
    after = tmp_path / "after"
    after.mkdir()
    again = write_health_products(
        result.outputs["classes"], result.outputs["confidence"], image, after, "plot", options
    )
    assert again["health"] == result.summary["health"] and again["health"]["polygons"] > 20
    for name in ("plot.health.geojson", "plot.health.qml"):
        assert (after / name).read_bytes() == (tmp_path / "run" / name).read_bytes()
    timings = result.summary["timings_s"]
    assert timings["vectorise"] > 0 and timings["vectorise_after_segmentation"] >= 0
    json.dumps(result.summary)


def job_for(tmp_path: Path, **options):
    path = write_raster(tmp_path / "g.tif", np.zeros((1, 40, 30), dtype="uint8"), nodata=NODATA)
    return plan_health(ClassRaster.of_file(path), HealthOptions(pane_size=16, **options))


def test_a_failing_health_pass_fails_the_producer_and_stops(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    before = threading.active_count()
    block = np.ones((10, 30), dtype="uint8")
    missing = tmp_path / "missing"
    with pytest.raises(Exception, match="missing"), HealthStream(job, None, missing, "x") as stream:
        for row in range(0, 40, 10):
            stream.add(Window(0, row, 30, 10), block, block)
        stream.finish()
    assert threading.active_count() == before


def test_leaving_early_stops_the_pass_and_leaves_no_products(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    block = np.ones((10, 30), dtype="uint8")
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt), HealthStream(job, None, out, "x") as stream:
        stream.add(Window(0, 0, 30, 10), block, block)
        stream.add(Window(0, 10, 30, 10), block, block)
        raise KeyboardInterrupt
    assert threading.active_count() == before
    assert list(out.iterdir()) == []


def test_cli_stream_health_flag_gives_the_same_products(tmp_path: Path) -> None:
    from agriseg_cli.main import main

    image = write_raster(tmp_path / "plot.tif", field_image(96, 128, seed=4))
    fast = ["--device", "cpu", "--quiet", "--tile-size", "64", "--overlap", "16"]
    for flag in ("--stream-health", "--no-stream-health", "--quiet"):
        assert main(["run", str(image), "--out", str(tmp_path / flag), flag, *fast]) == 0
    on, off = tmp_path / "--stream-health", tmp_path / "--no-stream-health"
    name = "plot.health.geojson"
    assert (on / name).read_bytes() == (off / name).read_bytes()
    default = tmp_path / "--quiet"
    summaries = [json.loads((d / "plot.summary.json").read_text()) for d in (on, off, default)]
    assert summaries[0]["parameters"]["stream_health"] is True
    assert summaries[1]["parameters"]["stream_health"] is False
    assert summaries[2]["parameters"]["stream_health"] is True  # the default, on CPU too
    assert summaries[0]["health"] == summaries[1]["health"]


def test_panes_on_processes_or_dask_workers_give_byte_identical_products(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the panes and the GeoJSON text are made (this process, worker processes, a
    Dask cluster) changes nothing."""
    import logging

    import pyogrio
    import shapely
    from conftest import UTM, UTM_TRANSFORM
    from distributed import Client, LocalCluster

    from agriseg.health import vector_outputs

    # Many slices of GeoJSON text per strip, made in any order, written in order.
    monkeypatch.setattr(vector_outputs, "WRITE_SLICE", 7)

    image = write_raster(tmp_path / "f.tif", field_image(150, 170, seed=5))
    rng = np.random.default_rng(5)
    classes = (field_image(150, 170, seed=5)[1] > 120).astype("uint8")  # crop where green
    classes[rng.random(classes.shape) < 0.03] = 2  # specks of weed: some sieved away
    classes[60:90, 20:70] = 3
    classes[:, :6] = NODATA
    write_raster(tmp_path / "f.classes.tif", classes[None], UTM, UTM_TRANSFORM, nodata=NODATA)
    conf = rng.integers(0, 101, classes.shape, dtype="uint8")
    write_raster(tmp_path / "f.confidence.tif", conf[None], UTM, UTM_TRANSFORM, nodata=NODATA)
    options = {
        "pane_size": 32,  # 5 x 6 panes, many seams
        "min_area_m2": 0.004,
        "polygons": "all",
        "formats": ("geojson", "gpkg", "fgb"),
    }
    args = (tmp_path / "f.classes.tif", tmp_path / "f.confidence.tif", image)
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        outs[workers].mkdir()
        write_health_products(*args, outs[workers], "f", HealthOptions(workers=workers, **options))
    outs["dask"] = tmp_path / "dask"
    outs["dask"].mkdir()
    job = plan_health(ClassRaster.of_file(args[0]), HealthOptions(**options))
    with (
        LocalCluster(
            n_workers=2, processes=True, dashboard_address=None, silence_logs=logging.CRITICAL
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        job.task_runner(client) as run_tasks,
    ):
        job.run(job.file_strips(args[0], args[1]), image, outs["dask"], "f", run_tasks)
    for name in ("f.health.geojson", "f.health.fgb", "f.health.qml", "f.preview.png"):
        expected = (outs[1] / name).read_bytes()
        assert (outs[2] / name).read_bytes() == expected, name
        assert (outs["dask"] / name).read_bytes() == expected, name
    # A GeoPackage records when it was written: its layers must match.
    frames = [
        pyogrio.read_dataframe(outs[k] / "f.health.gpkg", layer="health") for k in (1, 2, "dask")
    ]
    assert len(frames[0]) > 30
    for frame in frames[1:]:
        assert frame.drop(columns="geometry").equals(frames[0].drop(columns="geometry"))
        assert shapely.equals_exact(frame.geometry.values, frames[0].geometry.values, 0).all()


def test_beside_a_segmentation_taking_every_core_the_pass_runs_in_its_own_thread() -> None:
    big = PARALLEL_MIN_PX
    with task_runner(None, None, big, spare_cores=0) as run:
        assert run.submit is run_inline and run.parallel == 1
    with task_runner(None, None, big - 1, spare_cores=8) as run:  # small: one is enough
        assert run.submit is run_inline
    if default_workers() > 1:  # alone, a large raster's pass gets a process per core
        with task_runner(None, None, big) as run:
            assert run.parallel == default_workers() and run.submit is not run_inline
            assert run(sum, [1, 2]).result() == 3

"""Atomic outputs: all of a run's files appear together or not at all."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import field_image, write_raster

from agriseg.errors import OutputError
from agriseg.io.atomic import (
    TMP_MARK,
    atomic_output,
    describe_os_error,
    output_folder,
    output_transaction,
    remove_stale_temporaries,
    temporary_name,
)
from agriseg.segmentation.raster_outputs import incomplete_geotiff


def test_transaction_renames_all_files_into_place_on_success(tmp_path):
    with output_transaction() as txn:
        for name in ("a.tif", "b.json"):
            txn.stage(tmp_path / name).write_text(name)
        assert not (tmp_path / "a.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.json"]


def test_failed_transaction_leaves_previous_outputs_and_no_temporaries(tmp_path):
    (tmp_path / "a.tif").write_text("last night")
    with pytest.raises(RuntimeError), output_transaction() as txn:
        txn.stage(tmp_path / "a.tif").write_text("half")
        txn.stage(tmp_path / "b.json").write_text("half")
        raise RuntimeError("model crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]
    assert (tmp_path / "a.tif").read_text() == "last night"


def test_os_errors_name_the_final_file(tmp_path):
    with (
        pytest.raises(OutputError, match=r"a\.json: cannot write"),
        atomic_output(tmp_path / "a.json") as tmp,
    ):
        raise OSError(errno.EIO, "I/O error", str(tmp))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the device; free space"),
        (errno.EFBIG, "file too large"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_describe_os_error(tmp_path, code, words):
    message = describe_os_error(tmp_path / "x.tif", OSError(code, os.strerror(code)))
    assert message.startswith(f"{tmp_path / 'x.tif'}: ") and words in message


def test_temporary_keeps_the_suffix_for_format_drivers(tmp_path):
    tmp = temporary_name(tmp_path / "field.polygons.gpkg")
    assert tmp.name == f".field.polygons.gpkg{TMP_MARK}{os.getpid()}.gpkg"


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f".a.tif{TMP_MARK}999999.tif"
    live = tmp_path / f".b.tif{TMP_MARK}{os.getppid()}.tif"
    sidecar = tmp_path / f".c.gpkg{TMP_MARK}999999.gpkg-journal"
    keep = tmp_path / "a.tif"
    for path in (dead, live, sidecar, keep):
        path.write_text("")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([dead, sidecar])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])


def test_failed_run_removes_the_folders_it_created(tmp_path):
    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), output_folder(out):
        assert out.is_dir()
        raise RuntimeError
    assert not (tmp_path / "new").exists()


def test_failed_run_keeps_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError), output_folder(out):
        raise RuntimeError
    assert (out / "notes.txt").exists()


def test_incomplete_geotiff_is_detected(tmp_path):
    path = write_raster(tmp_path / "c.tif", field_image(256, 256), block=64)
    assert incomplete_geotiff(path) is None
    os.truncate(path, path.stat().st_size - 1000)
    assert incomplete_geotiff(path) is not None

"""`agriseg batch`: isolation of failures, skipping finished surveys, recovery after
SIGKILL, and the results-folder lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from agriseg_cli.main import main
from conftest import field_image, write_raster

from agriseg.batch import BatchOptions, run_batch
from agriseg.config import RunConfig
from agriseg.io.atomic import TMP_MARK
from agriseg.io.locking import LOCK_NAME

FAST = ("--device", "cpu", "--tile-size", "128", "--overlap", "32")
CONFIG = RunConfig(device="cpu", tile_size=128, overlap=32)


def surveys(folder: Path, n: int, size: int = 128) -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [
        write_raster(folder / f"field{i}.tif", field_image(size, size, seed=i)) for i in range(n)
    ]


def batch_cmd(survey_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "agriseg_cli.main", "batch", str(survey_dir), "--out", str(out)]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["surveys"]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARK in p.name]


def assert_complete(out: Path, survey: Path) -> None:
    with rasterio.open(survey) as src, rasterio.open(out / f"{survey.stem}.classes.tif") as dst:
        assert (dst.height, dst.width, dst.crs) == (src.height, src.width, src.crs)
        assert dst.read(1).max() < 4
    assert json.loads((out / f"{survey.stem}.summary.json").read_text())["tiles"] > 0


def test_failures_are_isolated_and_a_rerun_skips_finished_surveys(tmp_path, capsys):
    survey_dir = tmp_path / "surveys"
    good = surveys(survey_dir, 3)
    broken = survey_dir / "broken.tif"
    broken.write_text("not an image")
    out = tmp_path / "results"
    args = ["batch", str(survey_dir), "--out", str(out), *FAST]

    assert main(args) == 1
    first = capsys.readouterr()
    entries = manifest(out)
    assert {n: e["status"] for n, e in entries.items()} == {
        "broken": "failed",
        "field0": "succeeded",
        "field1": "succeeded",
        "field2": "succeeded",
    }
    assert "broken.tif: not a readable raster" in entries["broken"]["error"]
    assert "broken failed: " in first.out
    assert "Traceback" not in first.err
    for path in good:
        entry = entries[path.stem]
        assert entry["fingerprint"]["size"] == path.stat().st_size
        assert entry["seconds"] > 0
        assert {"classes", "confidence", "summary"} <= set(entry["outputs"])
        assert all((out / p).is_file() for p in entry["outputs"].values())
        assert_complete(out / path.stem, path)
        summary = json.loads((out / entry["outputs"]["summary"]).read_text())
        digest = entry["health"]  # the model's classes, roles and shares, and the indices
        assert digest["classes"] == {
            name: {"role": c["role"], "share": c["share"]}
            for name, c in summary["health"]["classes"].items()
        }
        assert digest["health_score"] == summary["health"]["health_score"]
    assert not (out / "broken").exists()
    log = next((out / "logs").glob("agriseg-*.log")).read_text()
    assert "broken.tif: failed" in log

    assert main(args) == 1
    second = capsys.readouterr()
    assert second.err.count("already done, skipped") == 3
    assert "broken.tif: segmenting" in second.err
    assert manifest(out)["field0"] == entries["field0"]

    write_raster(broken, field_image(96, 96))
    assert main(args) == 0
    assert manifest(out)["broken"]["status"] == "succeeded"
    assert "1 succeeded, 0 failed, 3 skipped" in capsys.readouterr().err


def test_changed_input_options_or_force_redo_a_survey(tmp_path):
    survey_dir = tmp_path / "surveys"
    (path,) = surveys(survey_dir, 1, size=64)
    out = tmp_path / "results"

    def outcome(config: RunConfig = CONFIG, **options) -> str:
        result = run_batch(survey_dir, out, config, BatchOptions(**options))
        return result.surveys[0].outcome

    assert outcome() == "succeeded"
    assert outcome() == "skipped"
    assert outcome(RunConfig(device="cpu", tile_size=128, overlap=32, batch_size=1)) == "skipped"
    assert outcome(force=True) == "succeeded"
    assert outcome(RunConfig(device="cpu", tile_size=128, overlap=16)) == "succeeded"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert outcome(checksum=True) == "succeeded"
    # A file copied again unchanged: with --checksum its content shows it is done.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert outcome(checksum=True) == "skipped"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert outcome() == "succeeded"
    (out / path.stem / f"{path.stem}.classes.tif").unlink()
    assert outcome() == "succeeded"


def test_batch_killed_mid_survey_is_completed_by_the_next_run(tmp_path):
    survey_dir = tmp_path / "surveys"
    paths = surveys(survey_dir, 2, size=256)
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [*batch_cmd(survey_dir, out), *FAST, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(".classes.tif" in p.name for p in temporaries(out)):
            assert proc.poll() is None, "batch finished before it could be killed"
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert temporaries(out)
    assert manifest(out)[paths[0].stem]["status"] == "running"

    assert main(["batch", str(survey_dir), "--out", str(out), *FAST, "--quiet"]) == 0
    assert not temporaries(out)
    assert {e["status"] for e in manifest(out).values()} == {"succeeded"}
    for path in paths:
        assert_complete(out / path.stem, path)


def test_a_second_batch_on_the_same_results_refuses(tmp_path, capsys):
    survey_dir = tmp_path / "surveys"
    surveys(survey_dir, 3, size=192)
    out = tmp_path / "results"
    first = subprocess.Popen(
        [*batch_cmd(survey_dir, out), *FAST, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        lock = out / LOCK_NAME
        while not (lock.exists() and lock.read_text()):
            assert first.poll() is None, "first batch ended early"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert main(["batch", str(survey_dir), "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"agriseg batch: error: {out}: results folder is in use by ")
        assert f"(pid {first.pid} on " in err and "wait for it to finish" in err
    finally:
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert "ERROR batch: " in next((out / "logs").glob("*.log")).read_text()


def test_a_lock_left_by_a_killed_batch_is_recovered(tmp_path, caplog):
    survey_dir = tmp_path / "surveys"
    surveys(survey_dir, 1, size=64)
    out = tmp_path / "results"
    out.mkdir()
    stale = {"pid": 999999, "host": "nightly", "started": "2024-05-01T02:00:00", "command": "x"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    (out / f".manifest.json{TMP_MARK}999999.json").write_text("{")
    with caplog.at_level("WARNING", logger="agriseg"):
        result = run_batch(survey_dir, out, CONFIG)
    assert result.ok
    assert "recovered the lock of `x` (pid 999999 on nightly" in caplog.text
    assert not temporaries(out)
    assert (out / LOCK_NAME).read_text() == ""


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: None, "no such folder"),
        (lambda d: d.mkdir(), "no .tif or .tiff file is there"),
        (lambda d: (d.mkdir(), (d / "notes.txt").write_text("")), "no .tif or .tiff file"),
    ],
)
def test_batch_level_errors_exit_2_and_leave_nothing(tmp_path, capsys, setup, expected):
    survey_dir = tmp_path / "surveys"
    setup(survey_dir)
    out = tmp_path / "r"
    assert main(["batch", str(survey_dir), "--out", str(out), *FAST]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()  # not even the night's log folder


def test_batch_out_naming_a_file_says_so(tmp_path, capsys):
    surveys(tmp_path / "surveys", 1, size=32)
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main(["batch", str(tmp_path / "surveys"), "--out", str(taken), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{taken}: cannot create the output folder (a file of that name exists)" in err
    assert taken.read_text() == ""


def test_default_pattern_takes_tif_and_tiff_in_any_case_and_lists_the_rest(tmp_path, capsys):
    survey_dir = tmp_path / "surveys"
    survey_dir.mkdir()
    for name in ("NORTH.TIF", "south.tiff", "east.Tif"):
        write_raster(survey_dir / name, field_image(64, 64))
    (survey_dir / "flight notes.txt").write_text("windy")
    (survey_dir / "west.jp2").write_bytes(b"")
    (survey_dir / ".hidden.tif").write_bytes(b"")
    out = tmp_path / "r"
    assert main(["batch", str(survey_dir), "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert set(manifest(out)) == {"NORTH", "south", "east"}
    assert "not surveys: flight notes.txt, west.jp2" in captured.out
    assert "2 file(s) there are not surveys (not .tif or .tiff): flight notes.txt" in captured.err
    last = json.loads((out / "manifest.json").read_text())["last_batch"]
    assert last["not_surveys"] == ["flight notes.txt", "west.jp2"]


def test_manifest_outputs_use_the_summary_kinds(tmp_path):
    survey_dir = tmp_path / "surveys"
    surveys(survey_dir, 1, size=64)
    out = tmp_path / "r"
    assert main(["batch", str(survey_dir), "--out", str(out), *FAST, "--format", "fgb"]) == 0
    entry = manifest(out)["field0"]
    summary = json.loads((out / entry["outputs"]["summary"]).read_text())
    # one key style: the kinds of the summary's outputs, paths below the results folder
    assert entry["outputs"] == {k: f"field0/{name}" for k, name in summary["outputs"].items()}
    assert set(entry["outputs"]) == {
        *("classes", "classes_aux", "classes_qml", "confidence", "summary"),
        *("fgb", "qml", "preview"),
    }
    assert sorted(p.name for p in (out / "field0").iterdir()) == sorted(summary["outputs"].values())


def test_same_stem_twice_is_refused(tmp_path, capsys):
    survey_dir = tmp_path / "surveys"
    survey_dir.mkdir()
    for name in ("a.tif", "a.tiff"):
        write_raster(survey_dir / name, np.zeros((3, 32, 32), "uint8"))
    code = main(["batch", str(survey_dir), "--out", str(tmp_path / "r"), "--pattern", "*.tif*"])
    assert code == 2
    assert "a.tif and a.tiff would both write to <out>/a/" in capsys.readouterr().err

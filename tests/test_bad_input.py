"""Bad input to `agriseg run`: a one-line message naming the file and the fix, exit
status 2, no traceback, and nothing left in --out."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from agriseg_cli.main import main
from conftest import field_image, write_raster

from agriseg.classes import NODATA
from agriseg.errors import InputError, RasterReadError
from agriseg.models.inference import get_predictor

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")


def run_bad(path: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run on bad input; check exit status 2, one error line, no output; return it."""
    code = main(["run", str(path), "--out", str(out), *FAST, *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("agriseg run: error: ")]
    assert len(lines) == 1, err
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


def good(tmp_path: Path, name: str = "field.tif", size: int = 160, **kw) -> Path:
    return write_raster(tmp_path / name, field_image(size, size), **kw)


def test_missing_file(tmp_path, capsys):
    msg = run_bad(tmp_path / "nope.tif", tmp_path / "out", capsys)
    assert "nope.tif: no such file" in msg and "check the path" in msg


def test_directory(tmp_path, capsys):
    (tmp_path / "survey.tif").mkdir()
    msg = run_bad(tmp_path / "survey.tif", tmp_path / "out", capsys)
    assert "survey.tif: is a directory" in msg and "agriseg batch" in msg


def test_empty_file(tmp_path, capsys):
    (tmp_path / "empty.tif").touch()
    msg = run_bad(tmp_path / "empty.tif", tmp_path / "out", capsys)
    assert "empty.tif: file is empty" in msg and "re-copy" in msg


def test_text_file_named_tif(tmp_path, capsys):
    (tmp_path / "notes.tif").write_text("flight notes, not an image\n")
    msg = run_bad(tmp_path / "notes.tif", tmp_path / "out", capsys)
    assert "notes.tif: not a readable raster" in msg and "re-export it as GeoTIFF" in msg


def test_truncated_geotiff(tmp_path, capsys):
    path = good(tmp_path, size=256)
    os.truncate(path, path.stat().st_size // 2)
    msg = run_bad(path, tmp_path / "out", capsys)
    assert str(path) in msg and "re-export" in msg


def test_geotiff_cut_off_before_its_directory_is_told_to_copy_again(tmp_path, capsys):
    # An interrupted copy: the TIFF header is there, its directory is not.
    path = good(tmp_path, size=256)
    os.truncate(path, 64)
    msg = run_bad(path, tmp_path / "out", capsys)
    assert f"{path}: a TIFF file that cannot be read" in msg
    assert "copy it again from the source" in msg and "re-export" not in msg


def test_corrupt_tiles_fail_mid_run_with_a_read_error(tmp_path, capsys):
    # The header is intact, so the file opens and validates; decoding tiles fails
    # later, inside a Dask task, after the output folder and temporaries exist.
    path = write_raster(tmp_path / "field.tif", field_image(256, 256), block=64)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\xff" * 2048)
    with rasterio.open(path) as src:
        assert src.width == 256
    msg = run_bad(path, tmp_path / "out", capsys)
    assert f"{path}: read failed at row" in msg
    assert "corrupt or truncated, re-export or re-copy it" in msg


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(RasterReadError):
        main(["run", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "out"), "--debug"])


def test_no_crs_is_refused_and_assume_crs_fixes_it(tmp_path, capsys):
    path = good(tmp_path, crs=None)
    msg = run_bad(path, tmp_path / "out", capsys)
    assert "field.tif: has no coordinate reference system" in msg
    assert "--assume-crs EPSG:" in msg
    out = tmp_path / "fixed"
    assert main(["run", str(path), "--out", str(out), *FAST, "--assume-crs", "EPSG:32631"]) == 0
    with rasterio.open(out / "field.classes.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_epsg(32631)


def test_invalid_assume_crs(tmp_path, capsys):
    path = good(tmp_path, crs=None)
    msg = run_bad(path, tmp_path / "out", capsys, "--assume-crs", "EPSG:nope")
    assert "'EPSG:nope' is not a valid CRS" in msg


@pytest.mark.parametrize(
    ("bands", "extra", "expected"),
    [
        (1, (), "has 1 data band(s) but the model needs 3 (red, green, blue)"),
        (3, ("--bands", "1,2"), "--bands gives 2 band(s) but the model needs 3"),
        (3, ("--bands", "3,2,5"), "names band(s) [5] but the file has bands 1-3"),
    ],
)
def test_bands_that_do_not_fit_the_model(tmp_path, capsys, bands, extra, expected):
    path = write_raster(tmp_path / "field.tif", field_image(64, 64)[:bands])
    msg = run_bad(path, tmp_path / "out", capsys, *extra)
    assert "field.tif" in msg and expected in msg


def test_all_nodata_succeeds_with_empty_outputs_and_a_warning(tmp_path, capsys):
    path = write_raster(tmp_path / "blank.tif", np.zeros((3, 96, 96), "uint8"), nodata=0)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "agriseg run: warning: " in err and "every pixel is nodata" in err
    with rasterio.open(out / "blank.classes.tif") as src:
        assert (src.read(1) == NODATA).all()
    summary = (out / "blank.summary.json").read_text()
    assert "every pixel is nodata" in summary


def test_unsupported_dtype(tmp_path, capsys):
    data = (field_image(64, 64) + 1j).astype("complex64")
    path = write_raster(tmp_path / "complex.tif", data)
    msg = run_bad(path, tmp_path / "out", capsys)
    assert "complex.tif: pixel type complex64 is not supported" in msg
    assert "gdal_translate -ot" in msg


def test_output_folder_inside_a_file(tmp_path, capsys):
    # Tests run as root, where chmod does not stop writes; a path through a regular
    # file cannot be created by anyone.
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" / "sub"
    msg = run_bad(good(tmp_path), out, capsys)
    assert f"{out}: cannot create the output folder" in msg and "choose a writable --out" in msg


def test_output_folder_on_a_read_only_filesystem(tmp_path, capsys):
    out = Path("/proc/agriseg-out")
    msg = run_bad(good(tmp_path), out, capsys)
    assert f"{out}: cannot create the output folder" in msg and "choose a writable --out" in msg


def _limit_file_size() -> None:
    # Writes beyond the limit fail with EFBIG, like a full disk, instead of killing.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_disk_full_while_writing(tmp_path):
    path = good(tmp_path, size=200)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "agriseg_cli.main", "run", str(path), "--out", str(out), *FAST],
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"agriseg run: error: {out}{os.sep}field.")
    assert "writing failed" in last
    assert "no space left" in last and "file too large" in last and "free space" in last
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--threads", "0", "--threads 0: expected at least 1 thread"),
        ("--workers", "0", "--workers 0: expected at least 1 worker"),
        ("--batch-size", "0", "--batch-size 0: expected at least 1 tile"),
        ("--overlap", "-2", "--overlap -2: expected an even number"),
    ],
)
def test_bad_option_fails_before_the_output_folder_exists(tmp_path, capsys, option, value, needle):
    out = tmp_path / "out"
    msg = run_bad(good(tmp_path), out, capsys, option, value)
    assert needle in msg
    assert not out.exists()


def test_zero_threads_is_not_taken_for_the_default() -> None:
    with pytest.raises(InputError, match="--threads 0"):
        get_predictor("default", "cpu", threads=0)

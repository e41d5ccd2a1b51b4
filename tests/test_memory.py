"""Peak memory of a run is bounded whatever the raster size.

Each run happens in a fresh process (peak RSS is per process). Slow: the 4096²
run takes minutes on two CPU cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil  # a dependency of Dask distributed
import pytest

from agriseg.bench import in_fresh_process, run_summary, write_bench_raster
from agriseg.config import RunConfig

pytestmark = pytest.mark.slow


def test_peak_memory_of_a_4096_run_is_under_1_1_gb_and_under_2x_a_1024_run(tmp_path):
    """A default run at 4096² peaks under 1.1 GB (issue #26), and 16 x the pixels of a
    1024² run cost less than twice its memory: what grows is the rows of chunks and
    strips held at once, with the raster's width (and the health pass beside the
    segmentation), not its area."""
    config = RunConfig(device="cpu")
    peaks = {}
    for size in (1024, 4096):
        path = write_bench_raster(tmp_path / f"b{size}.tif", size)
        summary = in_fresh_process(run_summary, path, tmp_path / f"out{size}", config)
        peaks[size] = summary["peak_rss_mb"]
    print(f"peak RSS (MB) by raster edge: {peaks}")  # shown with -s
    assert peaks[4096] <= 1100, peaks
    assert peaks[4096] < 2 * peaks[1024], peaks


def _tree_peak_mb(command: list[str]) -> float:
    """Peak of the summed RSS of ``command``'s process and its children (the health
    pass's worker processes count too), sampled every 0.2 s."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    parent = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    assert process.returncode == 0
    return peak / 2**20


def _tree_peaks(tmp_path: Path, shapes: dict[str, tuple[int, int | None]], *options: str):
    """Process-tree peaks (MB) of default ``agriseg run``s of benchmark surveys."""
    agriseg = str(Path(sys.executable).with_name("agriseg"))
    peaks = {}
    for name, (size, height) in shapes.items():
        path = write_bench_raster(tmp_path / f"{name}.tif", size, seed=1, height=height)
        command = [agriseg, "run", str(path), "--out", str(tmp_path / name), "--quiet"]
        peaks[name] = _tree_peak_mb([*command, "--device", "cpu", *options])
        path.unlink()
    print(f"peak RSS of the process tree (MB) by raster shape, {options}: {peaks}")
    return peaks


def test_with_the_health_pass_after_segmentation_large_and_wide_runs_stay_within_1_3x_of_4096(
    tmp_path,
):
    """Issue #17: 16384² (268 Mpx) and 32768 x 1024 against 4096², whole process tree,
    with ``--no-stream-health`` (the lower-memory order; about 6 minutes on two cores)."""
    shapes = {"4096x4096": (4096, None), "32768x1024": (32768, 1024), "16384x16384": (16384, None)}
    peaks = _tree_peaks(tmp_path, shapes, "--no-stream-health")
    assert peaks["32768x1024"] <= 1.3 * peaks["4096x4096"], peaks
    assert peaks["16384x16384"] <= 1.3 * peaks["4096x4096"], peaks


def test_by_default_memory_grows_with_a_surveys_width_not_its_length(tmp_path):
    """With the health pass beside the segmentation (the default) the rows held at once
    are wider on a wider survey (strips and chunk rows, up to their caps: 4096²
    peaked at 853 MB, 32768 x 1024 at 1236 MB), but a survey 4 x as long holds little
    more: glibc's heap grows a little over a long run (+14-15 % measured; about 4
    minutes on two cores)."""
    shapes = {
        "32768x1024": (32768, 1024),
        "16384x4096": (16384, 4096),
        "16384x16384": (16384, None),
    }
    peaks = _tree_peaks(tmp_path, shapes)
    assert peaks["16384x16384"] <= 1.2 * peaks["16384x4096"], peaks
    assert max(peaks.values()) < 2048, peaks

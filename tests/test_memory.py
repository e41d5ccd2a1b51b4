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


def test_peak_memory_of_a_4096_run_is_within_1_3x_of_a_1024_run_and_under_2_gb(tmp_path):
    config = RunConfig(device="cpu")
    peaks = {}
    for size in (1024, 4096):
        path = write_bench_raster(tmp_path / f"b{size}.tif", size)
        summary = in_fresh_process(run_summary, path, tmp_path / f"out{size}", config)
        peaks[size] = summary["peak_rss_mb"]
    print(f"peak RSS (MB) by raster edge: {peaks}")  # shown with -s
    assert peaks[4096] <= 1.3 * peaks[1024], peaks
    assert peaks[4096] < 2048, peaks


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


def test_peak_memory_of_large_and_wide_runs_is_within_1_3x_of_a_4096_run(tmp_path):
    """Issue #17: 16384² (268 Mpx) and 32768 x 1024 against 4096², whole process tree
    (about 6 minutes on two cores)."""
    agriseg = str(Path(sys.executable).with_name("agriseg"))
    shapes = {"4096x4096": (4096, None), "32768x1024": (32768, 1024), "16384x16384": (16384, None)}
    peaks = {}
    for name, (size, height) in shapes.items():
        path = write_bench_raster(tmp_path / f"{name}.tif", size, seed=1, height=height)
        command = [agriseg, "run", str(path), "--out", str(tmp_path / name), "--quiet"]
        peaks[name] = _tree_peak_mb([*command, "--device", "cpu"])
        path.unlink()
    print(f"peak RSS of the process tree (MB) by raster shape: {peaks}")  # shown with -s
    assert peaks["32768x1024"] <= 1.3 * peaks["4096x4096"], peaks
    assert peaks["16384x16384"] <= 1.3 * peaks["4096x4096"], peaks

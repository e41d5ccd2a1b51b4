"""Peak memory of a run is bounded whatever the raster size.

Each run happens in a fresh process (peak RSS is per process). Slow: the 4096²
run takes minutes on two CPU cores.
"""

from __future__ import annotations

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


def test_peak_memory_of_large_and_wide_runs_is_within_1_3x_of_a_4096_run(tmp_path):
    """Issue #17: 16384² (268 Mpx) and 32768 x 1024 against 4096² (about 15 minutes)."""
    config = RunConfig(device="cpu")
    shapes = {"4096x4096": (4096, None), "32768x1024": (32768, 1024), "16384x16384": (16384, None)}
    peaks = {}
    for name, (size, height) in shapes.items():
        path = write_bench_raster(tmp_path / f"{name}.tif", size, seed=1, height=height)
        summary = in_fresh_process(run_summary, path, tmp_path / f"out{name}", config)
        peaks[name] = summary["peak_rss_mb"]
        path.unlink()
    print(f"peak RSS (MB) by raster shape: {peaks}")  # shown with -s
    assert peaks["32768x1024"] <= 1.3 * peaks["4096x4096"], peaks
    assert peaks["16384x16384"] <= 1.3 * peaks["4096x4096"], peaks

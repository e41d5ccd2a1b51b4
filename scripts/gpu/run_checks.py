"""On the device: the GPU checks in one go, figures as JSON under ``$OUT``.

``python3 scripts/gpu/run_checks.py`` (after ``install_part.py`` has installed the
wheels) runs, each step under its own time limit and all within ``--budget``
seconds:

1. ``nvidia-smi`` and the versions of Python, torch, CUDA and the carried packages;
2. ``pytest -m gpu`` (the tests that need a CUDA device);
3. ``agriseg bench --device cuda --size 16384`` (``--size 8192`` for a first, quick
   try), while ``nvidia-smi`` samples the GPU's utilisation and memory every 250 ms;
4. with ``--sweep 8,16,32``: bench at ``--sweep-size`` (8192) for each batch size, as
   long as the main run's time says the next one fits in what is left.

``summary.json`` is rewritten after every step, so a call cut short still returns
what was done. Files under ``$OUT`` (at most 8, as the device tool returns):
``summary.json``, ``environment.txt``, ``pytest-gpu.txt``, ``bench-<size>.log``,
``sweep.log``, ``gpu-util.csv``.

``--dry-run`` runs the same steps here, without a GPU (``--device cpu``, small sizes,
no ``nvidia-smi``), writing the same files: ``tests/test_gpu_scripts.py`` runs it.

Standard library only, for the device's bare Python 3.12; agriseg itself comes from
this working tree (``PYTHONPATH``), the carried packages from ``.gpu-site/lib``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Distributions whose versions the summary records (the device's and the carried).
PACKAGES = (
    "torch", "torchvision", "timm", "numpy", "pandas", "scipy", "pillow", "onnxruntime",
    "rasterio", "pyogrio", "pyproj", "shapely", "geopandas", "dask", "distributed",
    "segmentation-models-pytorch", "typing-extensions", "click", "pytest",
)  # fmt: skip

#: Seconds kept back from the budget for writing the summary and returning.
RESERVE_S = 15

ENV_PROBE = """
import importlib.metadata as m, json, os, platform, sys
import torch
packages = {}
for name in sys.argv[1:]:
    try:
        packages[name] = m.version(name)
    except m.PackageNotFoundError:
        packages[name] = None
cuda = torch.cuda.is_available()
props = torch.cuda.get_device_properties(0) if cuda else None
print(json.dumps({
    "python": platform.python_version(),
    "executable": sys.executable,
    "cpus": len(os.sched_getaffinity(0)),
    "torch_cuda": torch.version.cuda,
    "cuda_available": cuda,
    "gpu": props.name if props else None,
    "gpu_memory_mb": round(props.total_memory / 2**20) if props else None,
    "gpu_multiprocessors": props.multi_processor_count if props else None,
    "bf16": torch.cuda.is_bf16_supported() if cuda else None,
    "packages": packages,
}))
"""


class Checks:
    """The steps of one call, their logs and the summary, under ``out``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.summary: dict = {
            "mode": "dry-run" if args.dry_run else "gpu",
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": args.device,
            "budget_s": args.budget,
            "steps": [],
            "bench": {},
            "sweep": {},
        }
        self.env = self._environment(args.site)

    @staticmethod
    def _environment(site: Path) -> dict[str, str]:
        """PYTHONPATH: this tree's agriseg, ``agriseg_cli`` (the ``cli/`` folder, as
        installed), then the carried wheels ahead of the device's own packages."""
        shim = site / "shim"
        shim.mkdir(parents=True, exist_ok=True)
        link = shim / "agriseg_cli"
        if not link.is_symlink() or link.resolve() != (REPO / "cli").resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(REPO / "cli", target_is_directory=True)
        paths = [str(REPO), str(shim), str(site / "lib"), os.environ.get("PYTHONPATH", "")]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYTHONUNBUFFERED": "1",
        }

    def left(self) -> float:
        """Seconds left of the budget, less the reserve."""
        return self.args.budget - RESERVE_S - (time.monotonic() - self.started)

    def write(self) -> None:
        self.summary["elapsed_s"] = round(time.monotonic() - self.started, 1)
        path = self.out / "summary.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.summary, indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)

    def step(self, name: str, command: list[str], log: str, limit: float) -> tuple[int, str]:
        """Run ``command`` for at most ``limit`` seconds, appending its output to ``log``;
        record it in the summary. Returns the exit status (124 on timeout) and output."""
        began = time.monotonic()
        timed_out = False
        # Its own process group, so that a timeout also ends what it spawned (bench
        # runs in a spawned process that would otherwise hold the GPU on).
        process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = process.communicate(timeout=max(1.0, limit))
            rc = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            timed_out, rc = True, 124
            output += f"\n[timed out after {limit:.0f} s]\n"
        seconds = round(time.monotonic() - began, 1)
        with (self.out / log).open("a") as f:
            f.write(f"$ {' '.join(command)}\n{output}\n[exit {rc}, {seconds} s]\n\n")
        self.summary["steps"].append(
            {"name": name, "rc": rc, "seconds": seconds, "timed_out": timed_out, "log": log}
        )
        self.write()
        return rc, output

    def agriseg(self, *arguments: str) -> list[str]:
        return [self.args.python, "-m", "agriseg_cli.main", *arguments]


def last_json(output: str) -> dict | None:
    """The last line of ``output`` that parses as a JSON object (bench's figures)."""
    for line in reversed(output.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


def pytest_counts(output: str) -> dict[str, int | str]:
    """Counts from pytest's last line (``1 passed, 2 skipped, 40 deselected in 3.1s``)."""
    counts: dict[str, int | str] = {}
    lines = [line for line in output.strip().splitlines() if " in " in line]
    if not lines:
        return counts
    final = lines[-1].strip("= ")
    counts["line"] = final
    for part in final.split(" in ")[0].split(","):
        words = part.split()
        if len(words) == 2 and words[0].isdigit():
            counts[words[1]] = int(words[0])
    return counts


@contextlib.contextmanager
def gpu_sampler(checks: Checks, label: str) -> Iterator[dict]:
    """Sample the GPU's utilisation and memory every 250 ms while the block runs; the
    yielded dict receives their means and maxima, ``gpu-util.csv`` the samples."""
    stats: dict = {}
    if checks.args.dry_run or shutil.which("nvidia-smi") is None:
        yield stats
        return
    query = "timestamp,utilization.gpu,utilization.memory,memory.used,power.draw"
    sampler = subprocess.Popen(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-lms", "250"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        yield stats
    finally:
        sampler.terminate()
        output, _ = sampler.communicate(timeout=10)
        rows = [r for r in csv.reader(output.splitlines()) if len(r) == 5]
        with (checks.out / "gpu-util.csv").open("a") as f:
            for row in rows:
                f.write(",".join([label, *(c.strip() for c in row)]) + "\n")
        values = []
        for row in rows:
            with contextlib.suppress(ValueError):
                values.append([float(c) for c in row[1:]])
        if values:
            columns = list(zip(*values, strict=True))
            for key, column in zip(
                ("util_pct", "mem_util_pct", "memory_used_mb", "power_w"), columns, strict=True
            ):
                stats[key] = {
                    "mean": round(sum(column) / len(column), 1),
                    "max": round(max(column), 1),
                }
            stats["samples"] = len(values)


def bench(checks: Checks, size: int, log: str, *extra: str, work: Path | None = None) -> dict:
    """``agriseg bench`` at ``size`` on the device; its figures, GPU samples and seconds."""
    args = checks.args
    work = work or args.work / f"bench-{size}"
    if work.exists():
        shutil.rmtree(work)
    command = checks.agriseg(
        "bench", "--size", str(size), "--device", args.device, "--work-dir", str(work),
        *args.bench_args.split(), *extra,
    )  # fmt: skip
    with gpu_sampler(checks, f"{log}:{' '.join(extra) or size}") as samples:
        name = f"bench {size} {' '.join(extra)}".strip()
        rc, output = checks.step(name, command, log, checks.left())
    figures = last_json(output) if rc == 0 else None
    result = {"rc": rc, "wall_s": checks.summary["steps"][-1]["seconds"]}
    if figures is None:
        result["error"] = output.strip().splitlines()[-1] if output.strip() else "no output"
        # Cut short in the model-only pass, the run itself may have finished: keep its
        # summary (stage seconds, peak RSS).
        for path in (work / "outputs").glob("*.summary.json"):
            run_summary = json.loads(path.read_text())
            result["run_only"] = {
                k: run_summary.get(k) for k in ("timings_s", "peak_rss_mb", "tiles", "input")
            }
    else:
        result["figures"] = figures
    if samples:
        result["gpu_samples"] = samples
    return result


def run(args: argparse.Namespace) -> dict:
    checks = Checks(args)
    summary = checks.summary
    if not args.dry_run:
        checks.step("nvidia-smi", ["nvidia-smi"], "environment.txt", 30)
    rc, output = checks.step(
        "environment", [args.python, "-c", ENV_PROBE, *PACKAGES], "environment.txt", 120
    )
    summary["environment"] = last_json(output) if rc == 0 else {"error": output[-2000:]}
    checks.write()

    if not args.skip_pytest:
        pytest = [args.python, "-m", "pytest", "-m", "gpu", "-q", "-rA", "tests"]
        rc, output = checks.step("pytest -m gpu", pytest, "pytest-gpu.txt", min(240, checks.left()))
        summary["pytest"] = {"rc": rc, **pytest_counts(output)}
        checks.write()

    main_wall = None
    if args.size:
        result = bench(checks, args.size, f"bench-{args.size}.log")
        summary["bench"][str(args.size)] = result
        main_wall = result["wall_s"] if result["rc"] == 0 else None
        checks.write()

    # The sweep reuses the raster its first run writes; a run's time grows with its
    # pixels: predicted from the main run, with half again to spare.
    raster = args.work / "sweep" / f"bench-{args.sweep_size}.tif"
    for batch in [int(b) for b in args.sweep.split(",") if b]:
        label = f"batch_{batch}"
        need = main_wall * (args.sweep_size / args.size) ** 2 * 1.5 + 10 if main_wall else None
        if need is None or need > checks.left():
            summary["sweep"][label] = {
                "skipped": "no main run to predict from"
                if need is None
                else f"predicted {need:.0f} s, {checks.left():.0f} s left"
            }
            continue
        given = ("--input", str(raster)) if raster.exists() else ()
        summary["sweep"][label] = bench(
            checks, args.sweep_size, "sweep.log", *given, "--batch-size", str(batch),
            work=args.work / ("sweep" if not given else f"sweep-{batch}"),
        )  # fmt: skip
        checks.write()
    checks.write()
    return summary


def table(summary: dict) -> str:
    """A short table of the figures, printed last (the device tool returns the tail)."""
    env = summary.get("environment") or {}
    torch = env.get("packages", {}).get("torch")
    lines = [
        f"{summary['mode']} on {env.get('gpu') or 'no GPU'}, torch {torch}, CUDA "
        f"{env.get('torch_cuda')}, {env.get('cpus')} CPUs, {summary.get('elapsed_s')} s",
        f"pytest -m gpu: {summary.get('pytest', {}).get('line', 'not run')}",
    ]
    runs = [(f"{size}^2", r) for size, r in summary["bench"].items()]
    runs += list(summary["sweep"].items())
    for label, result in runs:
        figures = result.get("figures")
        if figures is None:
            lines.append(f"{label}: {result.get('skipped') or result.get('error')}")
            continue
        stages = " ".join(f"{k} {v:.1f}" for k, v in figures["stages_s"].items())
        util = result.get("gpu_samples", {}).get("util_pct", {}).get("mean")
        lines.append(
            f"{label} batch {figures['batch_size']}: {figures['mpx_per_s']} Mpx/s end to end, "
            f"{figures['pixels'] / 1e6 / figures['model_only_s']:.1f} Mpx/s model only "
            f"(ratio {figures['ratio']}), GPU peak {figures.get('peak_gpu_mb')} MiB, RSS "
            f"{figures['peak_rss_mb']} MiB, GPU util {util}% | {stages}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "gpu_out")))
    parser.add_argument("--size", type=int, default=None, help="bench edge (default 16384)")
    parser.add_argument("--sweep", default="", help="batch sizes to try, e.g. 8,16,32")
    parser.add_argument(
        "--sweep-size", type=int, default=None, help="bench edge of the sweep (default 8192)"
    )
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bench-args", default="", help="more agriseg bench options, quoted")
    parser.add_argument("--skip-pytest", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: --device cpu, small sizes")
    parser.add_argument("--site", type=Path, default=REPO / ".gpu-site")
    parser.add_argument("--work", type=Path, default=Path("/tmp/agriseg-gpu"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"
    size, sweep_size = (1024, 512) if args.dry_run else (16384, 8192)
    args.size = size if args.size is None else args.size
    args.sweep_size = sweep_size if args.sweep_size is None else args.sweep_size
    print(table(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the field-health pass of a finished run on one core, and with 1 and N worker processes.

    .venv/bin/python scripts/health_benchmark.py RUN_DIR IMAGE [--workers 2] [--repeats 8]

RUN_DIR is an ``agriseg run`` output folder (``<stem>.classes.tif`` and
``<stem>.confidence.tif``), IMAGE the surveyed raster. Each repeat runs the pass
three ways, alternated, each into its own folder and timed as a run's ``vectorise``
stage is (worker processes already started):

* ``one core``: in one process held to one CPU (a child process started with that
  affinity, as ``taskset -c 0`` would: the pass's threads share the core);
* ``1 worker``: in one process on every CPU (``--health-workers 1``);
* ``N workers``: with ``--workers`` worker processes (the default on N cores).

Every repeat's products must be byte-identical across the three. Prints one line per
pass (wall time; CPU time of this process, all its threads, and of the workers) and
the medians and speed-ups; writes nothing into RUN_DIR. On a machine other jobs load,
the CPU times still say how much of the pass is serial (this process's CPU time) and
how much ran in parallel.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyogrio
import shapely

from agriseg.config import HealthOptions
from agriseg.health.products import ClassRaster, plan_health
from agriseg.io.gdal_settings import run_settings


def same_layers(a: Path, b: Path) -> bool:
    """Whether two GeoPackages hold the same layers, rows and geometries (exactly)."""
    layers = sorted(pyogrio.list_layers(a)[:, 0])
    if layers != sorted(pyogrio.list_layers(b)[:, 0]):
        return False
    for layer in layers:
        if layer == "layer_styles":  # carries its write time
            continue
        x, y = (pyogrio.read_dataframe(p, layer=layer) for p in (a, b))
        if not x.drop(columns="geometry").equals(y.drop(columns="geometry")):
            return False
        if not shapely.equals_exact(x.geometry.values, y.geometry.values, 0).all():
            return False
    return True


def same_products(a: Path, b: Path) -> list[str]:
    """The product names in ``a``, after checking ``b`` holds the same ones, equal."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()), (names, list(b.iterdir()))
    # A GeoPackage records when it was written: compare its layers instead.
    plain = [n for n in names if not n.endswith(".gpkg")]
    _, mismatch, errors = filecmp.cmpfiles(a, b, plain, shallow=False)
    assert not mismatch and not errors, f"products differ: {mismatch + errors}"
    for name in set(names) - set(plain):
        assert same_layers(a / name, b / name), name
    return names


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def timed_pass(run_dir: Path, image: Path, out: Path, workers: int, polygons: str) -> dict:
    """One health pass into ``out``: wall seconds, CPU seconds, polygons."""
    stem = image.stem
    classes = run_dir / f"{stem}.classes.tif"
    confidence = run_dir / f"{stem}.confidence.tif"
    options = HealthOptions(workers=workers, polygons=polygons)
    job = plan_health(ClassRaster.of_file(classes), options)
    me = psutil.Process()
    before = {p.pid for p in me.children()}  # earlier pools, exiting
    with run_settings(), job.task_runner() as run_tasks:
        # As in a run, the worker processes start before the pass (while it segments):
        # give them the time to import their modules.
        time.sleep(5 if workers > 1 else 0)
        pool = [p for p in me.children() if p.pid not in before]
        cpu_start = [cpu_seconds(p) for p in (me, *pool)]
        start = time.perf_counter()
        summary = job.run(job.file_strips(classes, confidence), image, out, stem, run_tasks)
        seconds = time.perf_counter() - start
        cpu = [cpu_seconds(p) - c for p, c in zip((me, *pool), cpu_start, strict=True)]
    return {
        "seconds": seconds,
        "cpu_self": cpu[0],
        "cpu_workers": sum(cpu[1:]),
        "polygons": summary["health"]["polygons"],
    }


def one_core_pass(args: argparse.Namespace, out: Path) -> dict:
    """:func:`timed_pass` in a child process held to this process's first CPU."""
    cpu = min(os.sched_getaffinity(0))
    command = [
        sys.executable, __file__, str(args.run_dir), str(args.image),
        "--polygons", args.polygons, "--child-pass", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, check=True, capture_output=True, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--polygons", default=HealthOptions.polygons)
    parser.add_argument("--child-pass", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pass:
        print(json.dumps(timed_pass(args.run_dir, args.image, args.child_pass, 1, args.polygons)))
        return
    ways = {"one core": None, "1 worker": 1, f"{args.workers} workers": args.workers}
    times: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            outs = {}
            for way, workers in ways.items():
                out = Path(tmp) / f"{repeat}-{way.replace(' ', '-')}"
                out.mkdir()
                if workers is None:
                    found = one_core_pass(args, out)
                else:
                    found = timed_pass(args.run_dir, args.image, out, workers, args.polygons)
                times[way].append(found["seconds"])
                outs[way] = out
                print(
                    f"{way}: {found['seconds']:.2f} s, {found['polygons']} polygons; CPU: "
                    f"this process {found['cpu_self']:.2f} s, workers "
                    f"{found['cpu_workers']:.2f} s; load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            first, *others = outs.values()
            for other in others:
                names = same_products(first, other)
    medians = {way: statistics.median(t) for way, t in times.items()}
    many = medians[f"{args.workers} workers"]
    print(
        f"{args.repeats} repeats, medians: "
        + ", ".join(f"{way} {m:.2f} s" for way, m in medians.items())
        + f"; {args.workers} workers are {medians['one core'] / many:.2f}x faster than one "
        f"core, {medians['1 worker'] / many:.2f}x than 1 worker; products byte-identical "
        f"({', '.join(names)})"
    )


if __name__ == "__main__":
    main()

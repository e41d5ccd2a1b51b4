"""Time the field-health pass of a finished run with 1 and with N worker processes.

    .venv/bin/python scripts/health_benchmark.py RUN_DIR IMAGE [--workers 2] [--repeats 3]

RUN_DIR is an ``agriseg run`` output folder (``<stem>.classes.tif`` and
``<stem>.confidence.tif``), IMAGE the surveyed raster. The pass runs alternately in
one process and with ``--workers`` processes (same options otherwise), each into its
own folder, timed as a run's ``vectorise`` stage is (the worker processes already
started); every pair's products must be byte-identical. Prints one line per run and
the median speed-up; writes nothing into RUN_DIR.
"""

from __future__ import annotations

import argparse
import filecmp
import statistics
import tempfile
import time
from pathlib import Path

import pyogrio
import shapely

from agriseg.config import HealthOptions
from agriseg.gdal_settings import run_settings
from agriseg.products import ClassRaster, plan_health


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--polygons", default=HealthOptions.polygons)
    args = parser.parse_args()
    stem = args.image.stem
    classes = args.run_dir / f"{stem}.classes.tif"
    confidence = args.run_dir / f"{stem}.confidence.tif"
    times: dict[int, list[float]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            outs = {}
            for workers in (1, args.workers):
                out = Path(tmp) / f"{repeat}-{workers}"
                out.mkdir()
                options = HealthOptions(workers=workers, polygons=args.polygons)
                job = plan_health(ClassRaster.of_file(classes), options)
                # As in a run, the worker processes start before the pass (while it
                # segments): give them the time to import their modules.
                with run_settings(), job.block_runner() as run_blocks:
                    time.sleep(5 if workers > 1 else 0)
                    start = time.perf_counter()
                    strips = job.file_strips(classes, confidence)
                    summary = job.run(strips, args.image, out, stem, run_blocks)
                    seconds = time.perf_counter() - start
                times[workers].append(seconds)
                outs[workers] = out
                polygons = summary["health"]["polygons"]
                print(f"workers {workers}: {seconds:.2f} s, {polygons} polygons", flush=True)
            names = sorted(p.name for p in outs[1].iterdir())
            # A GeoPackage records when it was written: compare its layers instead.
            plain = [n for n in names if not n.endswith(".gpkg")]
            _, mismatch, errors = filecmp.cmpfiles(
                outs[1], outs[args.workers], plain, shallow=False
            )
            assert not mismatch and not errors, f"products differ: {mismatch + errors}"
            for name in set(names) - set(plain):
                assert same_layers(outs[1] / name, outs[args.workers] / name), name
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(
        f"{args.repeats} pairs, median: 1 worker {one:.2f} s, {args.workers} workers {many:.2f} s, "
        f"speed-up {one / many:.2f}x; products byte-identical ({', '.join(names)})"
    )


if __name__ == "__main__":
    main()

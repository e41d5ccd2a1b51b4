"""Empty areas are free: a large survey whose only valid pixels are one small patch.

Writes a sparse, tiled RGBA GeoTIFF of ``--size`` px square whose alpha band is 0
everywhere but one ``--patch`` px square of a generated survey, the patch alone as
its own file, runs ``agriseg run`` on both in this process and prints the times and
their ratio (plus the tiles the model ran), as a JSON line.

    .venv/bin/python scripts/empty_benchmark.py --size 40000 --out /tmp/empty40k

Blocks outside the patch are never written (``SPARSE_OK=TRUE``): the file stays a
few megabytes whatever ``--size``, and GDAL reads its missing blocks as zeros.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from agriseg.config import RunConfig
from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.run import segment_raster

BLOCK = 512


def write_patch_survey(
    path: Path, size: int, patch: int, at: tuple[int, int], seed: int = 0
) -> Path:
    """A ``size`` px square sparse RGBA GeoTIFF, valid (alpha 255) only on a ``patch`` px
    square of a generated survey whose top-left pixel is ``at`` (row, column)."""
    survey = generate_survey(draw_params(seed, patch, patch, weed_density=0.08), seed)
    gsd = survey.transform.a
    x0, y0 = survey.transform.c - at[1] * gsd, survey.transform.f + at[0] * gsd
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint8",
        "crs": survey.crs,
        "transform": Affine(gsd, 0, x0, 0, -gsd, y0),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "photometric": "RGB",
        "sparse_ok": True,
        "BIGTIFF": "IF_SAFER",
    }
    rgba = np.concatenate([survey.image, np.full((1, patch, patch), 255, "uint8")])
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
        dst.write(rgba, window=Window(at[1], at[0], patch, patch))
    return path


def write_patch_alone(path: Path, patch: int, seed: int = 0) -> Path:
    """The same generated patch as a file of its own (RGBA, all valid)."""
    return write_patch_survey(path, patch, patch, (0, 0), seed)


def timed_run(image: Path, out: Path, config: RunConfig) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = segment_raster(image, out, config).summary
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--patch", type=int, default=1024)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # The patch sits off the block grid, as a real flight area would.
    at = (args.size // 3 + 100, args.size // 2 + 37)
    big = write_patch_survey(args.out / f"empty{args.size}.tif", args.size, args.patch, at)
    alone = write_patch_alone(args.out / f"patch{args.patch}.tif", args.patch)
    config = RunConfig(engine=args.engine)
    timed_run(alone, args.out / "warm", config)  # model loaded, caches warm
    patch_s, patch_summary = timed_run(alone, args.out / "patch", config)
    big_s, big_summary = timed_run(big, args.out / "big", config)
    print(
        json.dumps(
            {
                "size": args.size,
                "patch": args.patch,
                "file_mb": round(big.stat().st_size / 2**20, 1),
                "patch_s": round(patch_s, 2),
                "big_s": round(big_s, 2),
                "ratio": round(big_s / patch_s, 2),
                "tiles": big_summary["tiles"],
                "tiles_run": big_summary.get("tiles_run"),
                "patch_tiles_run": patch_summary.get("tiles_run", patch_summary["tiles"]),
                "big_timings_s": big_summary["timings_s"],
                "patch_timings_s": patch_summary["timings_s"],
            }
        )
    )


if __name__ == "__main__":
    main()

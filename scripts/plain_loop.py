"""The baseline agriseg is measured against: a plain whole-raster loop with the same model.

    .venv/bin/python scripts/plain_loop.py RASTER [--model default] [--out classes.tif]

What a user writes without agriseg: read the whole raster into memory, normalise it
as the model's metadata says, run non-overlapping tiles of the model's tile size
through PyTorch one at a time on every core (mirror-padded at the edges), take the
arg-max and write the class raster. No Dask, no overlap blending, no health
products. Prints the seconds it took and its peak memory; docs/performance.md, *Engines*
compares it with ``agriseg run`` on the same raster.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from agriseg.io.raster import open_raster, read_window
from agriseg.models.inference import normalize
from agriseg.models.registry import find_model, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("plain_loop.classes.tif"))
    args = parser.parse_args()
    started = time.perf_counter()
    _, meta = find_model(args.model)
    model, _ = load_model(args.model)
    info = open_raster(args.raster, meta.bands)
    image = read_window(
        info.path, info.bands, rasterio.windows.Window(0, 0, info.width, info.height)
    )
    x = normalize(image, info.dtype, meta.normalization)
    tile = meta.tile_size
    h, w = info.height, info.width
    ph, pw = -h % tile, -w % tile
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
    classes = np.empty(x.shape[1:], dtype="uint8")
    with torch.inference_mode():
        for r in range(0, x.shape[1], tile):
            for c in range(0, x.shape[2], tile):
                batch = torch.from_numpy(
                    np.ascontiguousarray(x[None, :, r : r + tile, c : c + tile])
                )
                classes[r : r + tile, c : c + tile] = model(batch)[0].argmax(0).numpy()
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8",
        "crs": info.crs, "transform": info.transform, "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(classes[:h, :w], 1)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"plain loop: {seconds:.1f} s, {h * w / 1e6 / seconds:.2f} Mpx/s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()

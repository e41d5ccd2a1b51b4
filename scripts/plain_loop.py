"""The baseline agriseg is measured against: a plain whole-raster loop with the same model.

    .venv/bin/python scripts/plain_loop.py RASTER [--model default] [--out classes.tif]
        [--overlap 64] [--polygons plain_loop.geojson]

What a user writes without agriseg: read the whole raster into memory, normalise it
as the model's metadata says, run tiles of the model's tile size through PyTorch one
at a time on every core (mirror-padded at the edges), take the arg-max and write the
class raster. With ``--overlap``, tiles overlap by that many pixels and their
probabilities are averaged where they do (agriseg's default is 64); with
``--polygons``, the class raster is polygonised whole (``rasterio.features.shapes``)
into a GeoJSON file through geopandas, as agriseg's health pass makes its polygons.
No Dask, no blending ramps, no sieve, no statistics. Prints the seconds it took and
its peak memory; docs/performance.md compares it with ``agriseg run`` on the same
raster.
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
    parser.add_argument("--overlap", type=int, default=0, help="pixels tiles share")
    parser.add_argument("--polygons", type=Path, help="GeoJSON file of the class polygons")
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
    stride = tile - args.overlap
    h, w = info.height, info.width
    ph = max(0, -(-(h - tile) // stride)) * stride + tile - h
    pw = max(0, -(-(w - tile) // stride)) * stride + tile - w
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
    if args.overlap:  # probabilities summed over the tiles that cover each pixel
        probs = np.zeros((len(meta.classes), *x.shape[1:]), dtype="float32")
    else:
        classes = np.empty(x.shape[1:], dtype="uint8")
    with torch.inference_mode():
        for r in range(0, x.shape[1] - tile + 1, stride):
            for c in range(0, x.shape[2] - tile + 1, stride):
                batch = torch.from_numpy(
                    np.ascontiguousarray(x[None, :, r : r + tile, c : c + tile])
                )
                out = model(batch)[0]
                if args.overlap:
                    probs[:, r : r + tile, c : c + tile] += out.softmax(0).numpy()
                else:
                    classes[r : r + tile, c : c + tile] = out.argmax(0).numpy()
    if args.overlap:
        classes = probs.argmax(0).astype("uint8")
        del probs
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8",
        "crs": info.crs, "transform": info.transform, "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(classes[:h, :w], 1)
    if args.polygons:
        import geopandas as gpd
        import shapely
        from rasterio.features import shapes

        found = list(shapes(classes[:h, :w], transform=info.transform))
        frame = gpd.GeoDataFrame(
            {"class": [meta.classes[int(v)].name for _, v in found]},
            geometry=[shapely.geometry.shape(g) for g, _ in found],
            crs=info.crs,
        )
        frame.to_file(args.polygons, driver="GeoJSON")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"plain loop: {seconds:.1f} s, {h * w / 1e6 / seconds:.2f} Mpx/s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()

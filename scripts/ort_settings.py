"""Which ONNX Runtime session options, tiles a run and precision run a model fastest here.

    .venv/bin/python scripts/ort_settings.py [--model agriseg-unet] [--int8 FILE.onnx]

Times the model alone as a run feeds it (see :mod:`agriseg.bench`): the same 16
normalised 512 px tiles of a generated survey, in batches of four (a chunk's
tiles, which a forward runs ``tiles_per_run`` at a time), on as many concurrent
forward streams as the setup has (cores / threads per forward), each forward a
:class:`~agriseg.models.inference.OnnxForward` with the setup's
:class:`~agriseg.models.inference.OrtSettings`. Setups alternate round by round so that
a busy machine slows them alike; the best round counts. Prints one line per setup,
then JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from agriseg.learning.synthetic import draw_params, generate_survey
from agriseg.models.inference import OnnxForward, OrtSettings, default_threads, normalize
from agriseg.models.meta import Normalization
from agriseg.models.onnx_export import shipped_onnx
from agriseg.models.onnx_format import read_onnx_meta
from agriseg.models.registry import find_model

TILES = 16  # 4 x 4 tiles of the survey
SEED = 20101  # not a training, held-out or calibration seed


def tiles_of_survey(edge: int, norm: Normalization) -> np.ndarray:
    """16 overlapping ``edge`` px tiles of a generated 1024 px survey, normalised."""
    survey = generate_survey(draw_params(SEED, 1024, 1024), SEED).image[:3].astype("float32")
    x = normalize(survey, "uint8", norm)
    offsets = [k * (1024 - edge) // 3 for k in range(4)]
    return np.stack([x[:, r : r + edge, c : c + edge] for r in offsets for c in offsets])


def time_setup(forward: OnnxForward, tiles: np.ndarray, batch: int, streams: int) -> float:
    batches = [tiles[i : i + batch] for i in range(0, len(tiles), batch)]
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(forward, batches[:streams]))  # warm up every stream
        began = time.perf_counter()
        list(pool.map(forward, batches))
        return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="agriseg-unet")
    parser.add_argument("--int8", type=Path, default=None, help="an int8 ONNX file to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="setups whose names hold any of these")
    args = parser.parse_args()
    weights, meta = find_model(args.model)
    fp32 = shipped_onnx(weights, meta.tile_size) if weights.suffix != ".onnx" else weights
    assert fp32 is not None, "a shipped model or an .onnx file"
    meta = read_onnx_meta(fp32)
    tiles = tiles_of_survey(meta.tile_size, meta.normalization)
    cores = default_threads()
    base = OrtSettings()
    # name: (file, settings, threads per forward, batch)
    setups: dict[str, tuple[Path, OrtSettings, int, int]] = {
        "adopted (all, arena, 1 thread x cores, 1 tile a run)": (fp32, base, 1, 4),
        "optimisation extended": (fp32, dataclasses.replace(base, optimization="extended"), 1, 4),
        "optimisation basic": (fp32, dataclasses.replace(base, optimization="basic"), 1, 4),
        "memory arena off": (fp32, dataclasses.replace(base, memory_arena=False), 1, 4),
        "parallel execution, 2 inter-op threads": (
            fp32, dataclasses.replace(base, parallel=True, inter_op_threads=2), 1, 4
        ),
        f"{cores} threads x 1 forward, spinning": (fp32, base, cores, 4),
        f"{cores} threads x 1 forward, no spinning": (
            fp32, dataclasses.replace(base, spinning=False), cores, 4
        ),
        "2 tiles a run": (fp32, dataclasses.replace(base, tiles_per_run=2), 1, 4),
        "4 tiles a run": (fp32, dataclasses.replace(base, tiles_per_run=4), 1, 4),
        "4 tiles a run, memory arena off": (
            fp32, dataclasses.replace(base, tiles_per_run=4, memory_arena=False), 1, 4
        ),
    }  # fmt: skip
    if args.int8 is not None:
        setups["int8 (adopted options)"] = (args.int8, base, 1, 4)
        setups["int8, 4 tiles a run"] = (
            args.int8,
            dataclasses.replace(base, tiles_per_run=4),
            1,
            4,
        )
        setups["int8, memory arena off"] = (
            args.int8,
            dataclasses.replace(base, memory_arena=False),
            1,
            4,
        )
    if args.only:
        setups = {k: v for k, v in setups.items() if any(w in k for w in args.only)}
    forwards = {
        name: OnnxForward(meta, threads, path, settings)
        for name, (path, settings, threads, _) in setups.items()
    }
    best = dict.fromkeys(setups, float("inf"))
    for _ in range(args.rounds):
        for name, (_, _, threads, batch) in setups.items():
            seconds = time_setup(forwards[name], tiles, batch, max(1, cores // threads))
            best[name] = min(best[name], seconds)
    reference = best[next(iter(setups))]
    for name, seconds in best.items():
        print(f"{name:45s} {seconds:6.2f} s for {TILES} tiles  ({seconds / reference:.2f}x)")
    print(json.dumps({"model": meta.name, "cores": cores, "tiles": TILES, "best_s": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

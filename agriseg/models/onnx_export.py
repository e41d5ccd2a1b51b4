"""Exporting a model to ONNX, for ONNX Runtime and the QGIS Deepness plugin.

The graph (:mod:`agriseg.models.onnx_graph`) takes NCHW float32 tiles of one fixed edge
(``tile_size``) with a dynamic batch axis, and returns softmax probabilities
``(N, C, H, W)``: Deepness's ``Segmentor`` thresholds and argmaxes them as they come.
The ``metadata_props`` hold what Deepness reads, each value JSON-encoded (Deepness
``json.loads`` every one), plus agriseg's own :class:`~agriseg.models.registry.ModelMeta`
under :data:`AGRISEG_META_KEY`, so ``agriseg run --model FILE.onnx`` needs no side
file.

Exporting needs PyTorch and onnx (``pip install "agriseg[torch]"``), imported only
when it runs; reading an exported file's metadata and finding the shipped or cached
files need ONNX Runtime alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agriseg.io.atomic import atomic_output
from agriseg.models.meta import RGB_BANDS, SIZE_DIVISOR, ModelMeta
from agriseg.models.onnx_format import AGRISEG_META_KEY, OPSET, check_export_tile, read_onnx_meta
from agriseg.optional import require_exporter

if TYPE_CHECKING:
    import torch

#: Tile overlap agriseg aims at for Deepness, in model pixels (a run's default ``--overlap``).
DEFAULT_OVERLAP_PX = 64

#: Largest tile overlap written for Deepness, in percent.
MAX_OVERLAP_PCT = 25

#: ``seg_small_segment`` written for Deepness: 0 leaves its *remove small segments*
#: unticked, so no median filter runs over the class map (agriseg's class raster has none).
SMALL_SEGMENT_OFF = 0


def deepness_overlap_px(tile_size: int, overlap_pct: int) -> int:
    """The overlap in pixels Deepness makes of ``overlap_pct`` percent of a tile.

    As Deepness's ``ProcessingOverlap.get_overlap_px`` computes it
    (``src/deepness/common/processing_overlap.py``), float arithmetic included.
    """
    return int(tile_size * overlap_pct / 100 * 2) // 2


def deepness_overlap_pct(tile_size: int, overlap_px: int = DEFAULT_OVERLAP_PX) -> int:
    """The ``tiles_overlap`` percentage to write for ``tile_size`` px tiles.

    Deepness reads a whole percentage (``int`` of the stored value, into an integer spin
    box) and strides tiles by ``tile_size`` minus :func:`deepness_overlap_px`. Only a
    stride on the model's :data:`~agriseg.models.meta.SIZE_DIVISOR` grid shows every tile the
    same pixel phase as ``agriseg run``'s tiles, so the network computes the same
    features: an off-grid stride (12 % of 512 px is 61 px) changed 2-3 % of the classes.
    Of the percentages up to :data:`MAX_OVERLAP_PCT` whose overlap keeps the stride on
    that grid, the one nearest ``overlap_px`` (the larger overlap on a tie: more context
    at the seams): 25 for 512 px tiles (128 px), 25 for 256 (64 px), 0 for 64 or 32.
    """

    def key(pct: int) -> tuple[int, int, int]:
        px = deepness_overlap_px(tile_size, pct)
        return (abs(px - overlap_px), -px, pct)

    on_grid = [
        pct
        for pct in range(MAX_OVERLAP_PCT + 1)
        if deepness_overlap_px(tile_size, pct) % SIZE_DIVISOR == 0
    ]
    return min(on_grid, key=key)


def deepness_metadata(
    meta: ModelMeta, tile_size: int, overlap_px: int = DEFAULT_OVERLAP_PX
) -> dict[str, Any]:
    """The values Deepness reads from ``metadata_props`` (before JSON encoding).

    They are the defaults Deepness's *Load default parameters* sets, chosen so that its
    map agrees with ``agriseg run``'s (docs/qgis.md says how closely, and what still
    differs). Deepness divides 0-255 RGB by 255 and then applies ``(x - mean) / std``
    per channel; agriseg feeds ``(value / 255 - mean) / std`` for 8-bit input, so the
    model's own mean and std carry over (the first three bands: Deepness feeds RGB).
    ``seg_thresh`` 0 keeps agriseg's plain argmax (Deepness then leaves its threshold
    off); ``seg_small_segment`` 0 leaves its median filter off; ``tiles_overlap`` is
    :func:`deepness_overlap_pct`.
    """
    values: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(meta.classes.names)},
        "tile_size": tile_size,
        # Deepness's documentation says tiles_size, its code reads tile_size: write both.
        "tiles_size": tile_size,
        "tiles_overlap": deepness_overlap_pct(tile_size, overlap_px),
        "standardization_mean": [float(v) for v in meta.normalization.mean[:3]],
        "standardization_std": [float(v) for v in meta.normalization.std[:3]],
        "seg_thresh": 0.0,
        "seg_small_segment": SMALL_SEGMENT_OFF,
    }
    if meta.gsd_m is not None:
        values["resolution"] = round(meta.gsd_m * 100, 4)
    return values


def onnx_meta(meta: ModelMeta, tile_size: int) -> ModelMeta:
    """``meta`` as recorded in an export: its tile size is the graph's fixed edge."""
    note = "" if tuple(meta.bands[:3]) == RGB_BANDS else " Deepness feeds RGB(A) only."
    return dataclasses.replace(
        meta,
        tile_size=tile_size,
        description=(meta.description + f" (ONNX export, {tile_size} px tiles).{note}").strip(),
    )


def export_onnx(
    model: torch.nn.Module, meta: ModelMeta, out: Path, tile_size: int | None = None
) -> Path:
    """Write ``model`` as an ONNX file with Deepness's and agriseg's metadata; returns ``out``."""
    require_exporter("exporting a model to ONNX")
    import onnx

    from agriseg.models.onnx_graph import export_bytes

    tile = tile_size or meta.tile_size
    graph = onnx.load_from_string(export_bytes(model, meta, tile))
    label_onnx(graph, meta, tile)
    save_onnx(graph, out)
    return out


def label_onnx(graph: Any, meta: ModelMeta, tile_size: int) -> None:
    """Write Deepness's and agriseg's metadata into ``graph`` (an ``onnx.ModelProto``)."""
    props = {key: json.dumps(value) for key, value in deepness_metadata(meta, tile_size).items()}
    props[AGRISEG_META_KEY] = onnx_meta(meta, tile_size).to_json()
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "agriseg"
    graph.doc_string = meta.description


def save_onnx(graph: Any, out: Path) -> None:
    """Write ``graph`` (an ``onnx.ModelProto``) to ``out`` atomically, readable by all."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        onnx.save(graph, str(tmp))
        tmp.chmod(0o644)


def export_model(
    model_ref: str | Path, out: Path | None = None, tile_size: int | None = None
) -> tuple[Path, ModelMeta]:
    """Export a shipped model (by name) or a checkpoint (by path) to ONNX.

    ``out`` defaults to ``NAME.onnx`` in the current folder and ``tile_size`` to the
    model's training tile size. Returns the written file and the exported metadata.
    """
    require_exporter("agriseg export")
    from agriseg.models.registry import load_model

    model, meta = load_model(model_ref)
    tile = tile_size or meta.tile_size
    check_export_tile(tile)
    path = export_onnx(model, meta, Path(out or f"{meta.name}.onnx"), tile)
    return path, onnx_meta(meta, tile)


#: Environment variable naming the folder for ONNX exports made on the fly.
CACHE_ENV = "AGRISEG_CACHE_DIR"


def cache_dir() -> Path:
    """Where ``--engine onnx`` keeps the exports it makes of checkpoints:
    ``$AGRISEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/agriseg``, else ``~/.cache/agriseg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agriseg"


#: Suffix of a shipped model's int8 variant, beside its fp32 ``NAME.onnx``.
INT8_SUFFIX = ".int8.onnx"


def shipped_onnx(weights: Path, tile_size: int, precision: str = "fp32") -> Path | None:
    """The ONNX file shipped beside a shipped model's weights in ``precision`` (``fp32``:
    ``NAME.onnx``, ``int8``: ``NAME.int8.onnx``), when it has ``tile_size`` tiles
    (``scripts/train_default.py`` writes them; a test keeps them in sync)."""
    from agriseg.models.registry import shipped_dir

    weights = Path(weights)
    suffix = INT8_SUFFIX if precision == "int8" else ".onnx"
    path = weights.with_name(weights.name.removesuffix(".safetensors") + suffix)
    if weights.parent.resolve() != shipped_dir().resolve() or not path.is_file():
        return None
    return path if read_onnx_meta(path).tile_size == tile_size else None


def cached_export(weights: Path, meta: ModelMeta, tile_size: int) -> str | bytes:
    """An ONNX graph of checkpoint ``weights`` for ``tile_size`` tiles: the shipped file
    of a shipped model, else exported once per machine: the cached file's path, or the
    graph itself when the cache is not writable.

    The cache key covers the weights, the metadata, the tile size, the opset and the
    torch version, so a changed checkpoint is exported afresh.
    """
    shipped = shipped_onnx(weights, tile_size)
    if shipped is not None:
        return str(shipped)
    require_exporter(f"exporting {weights} to ONNX for ONNX Runtime at {tile_size} px tiles")
    import torch

    from agriseg.models.onnx_graph import export_bytes
    from agriseg.models.registry import load_model

    digest = hashlib.sha256(Path(weights).read_bytes())
    for part in (meta.to_json(), str(tile_size), str(OPSET), torch.__version__):
        digest.update(part.encode())
    path = cache_dir() / "onnx" / f"{meta.name}-{tile_size}-{digest.hexdigest()[:16]}.onnx"
    if path.is_file():
        return str(path)
    model, _ = load_model(weights)
    try:
        return str(export_onnx(model, meta, path, tile_size))
    except OSError:  # a read-only home: export in memory, every process
        return export_bytes(model, meta, tile_size)

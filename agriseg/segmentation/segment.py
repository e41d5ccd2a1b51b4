"""Segmenting a raster: overlapping tiles through the model, stitched without seams.

The work is a Dask graph. Each chunk task (one row of tiles, one batch) reads its
extent (:func:`agriseg.io.raster.read_window`) and returns the sum of its tiles' class
probabilities, each multiplied by the blending window, over the row (made on the
model's device with PyTorch, see :meth:`~agriseg.models.inference.Predictor.blended_row`,
else here); each stitch task sums the contributions of the chunks around one core
window, normalises, and yields class ids and confidence (where the chunk settled
part of its core on the device, only the rest: see :class:`SettledClasses`).
Tiles without a valid pixel never reach the model, and a core without one is
written as nodata without stitching; chunks whose blocks a sparse file leaves out
(:mod:`agriseg.io.coverage`) are not even read: an orthomosaic's nodata costs next to
nothing (see :data:`agriseg.classes.SKIP_EMPTY`).
Chunks are submitted ahead of the stitching only as far as a byte budget allows,
and a stitched row's chunks are cut down to the rows the next row still needs, so
memory stays bounded whatever the raster's size and shape; finished blocks are
streamed to disk by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import dask
import numpy as np
from distributed import Client, Future, as_completed
from rasterio.windows import Window

import agriseg.classes
from agriseg.classes import NODATA
from agriseg.config import RefineChoice
from agriseg.io.areas import pixel_area_rows_m2
from agriseg.io.coverage import Coverage, read_coverage
from agriseg.io.raster import RasterInfo, read_window
from agriseg.models.inference import (
    DEFAULT_FORWARD_THREADS,
    Engine,
    Settled,
    get_predictor,
    normalize,
)
from agriseg.models.meta import Normalization
from agriseg.segmentation.evidence import (
    BlockEvidence,
    CoreEvidence,
    EvidencePlan,
    block_evidence,
    core_evidence,
)
from agriseg.segmentation.tiling import TileGrid

#: Most chunk rows submitted beyond the row being stitched.
LOOKAHEAD_ROWS = 2

#: Bytes of chunks (their input and their probabilities) submitted beyond the chunk row
#: that stitching needs next: the two rows of a 4096 px wide raster with the default
#: model, a few chunks of a 32,768 px one.
LOOKAHEAD_BYTES = 48 * 2**20


@dataclass(frozen=True)
class ChunkResult:
    """Blended probabilities of one chunk's tiles, and its core's validity."""

    acc: np.ndarray | None  # (C, rows, extent width) float16, probs x weight, or None: no tile ran
    valid: np.ndarray  # (core h, core w) bool
    model_s: float  # seconds the model itself ran
    prepare_s: float  # seconds spent normalising, cutting and accumulating tiles
    row_start: int = 0  # extent rows above ``acc`` (cut away by :func:`bottom_rows`)
    read_s: float = 0.0  # seconds spent reading the chunk's extent
    tiles_run: int = 0  # tiles the model ran (those with a valid pixel)
    evidence: CoreEvidence | None = None  # what the run's verdict notes of the core
    settled: SettledClasses | None = None  # classes its tiles alone decide, made with them
    load_s: float = 0.0  # seconds it waited for its worker's model to load (the first load)


@dataclass(frozen=True)
class SettledClasses:
    """Classes and confidence of the part of a chunk's core that no other chunk's tiles
    reach (:meth:`~agriseg.segmentation.tiling.TileGrid.settled`), made where its tiles
    were blended (see :meth:`~agriseg.models.inference.Predictor.blended_row`)."""

    window: Window  # in the raster
    classes: np.ndarray  # uint8, (window height, window width)
    confidence: np.ndarray  # uint8 0-100


def bottom_rows(part: ChunkResult, row_start: int) -> ChunkResult:
    """``part`` without its extent rows above ``row_start`` (which no later stitch needs)."""
    keep = None if part.acc is None else part.acc[:, row_start - part.row_start :].copy()
    return replace(
        part, acc=keep, valid=part.valid[:0], row_start=row_start, evidence=None, settled=None
    )


@dataclass(frozen=True)
class Block:
    """Final classes and confidence for one core window."""

    window: Window
    classes: np.ndarray  # uint8, NODATA where invalid
    confidence: np.ndarray  # uint8 0-100, NODATA where invalid
    pixels: np.ndarray  # per-class pixel counts
    area_m2: np.ndarray  # per-class ground area
    tiles: int
    model_s: float
    prepare_s: float
    read_s: float = 0.0
    tiles_run: int = 0  # of ``tiles``, those the model ran
    evidence: BlockEvidence | None = None  # for the run's verdict; None: no valid pixel
    has_data: bool = True  # False: every pixel is nodata (see empty_block)
    load_s: float = 0.0  # seconds its chunk waited for the model to load


def padded_extent(
    data: np.ndarray, grid: TileGrid, i: int, j: int, mirror: bool = True
) -> np.ndarray:
    """Chunk ``(i, j)``'s whole extent from ``data``, the part of it inside the raster:
    padded beyond the raster's edge, mirrored, or with NaN (invalid pixels) where
    ``mirror`` is False (``data`` itself where the extent is all inside)."""
    ext = grid.extent(i, j)
    top = max(0, -ext.row_off)
    left = max(0, -ext.col_off)
    bottom = ext.height - top - data.shape[1]
    right = ext.width - left - data.shape[2]
    if top == left == bottom == right == 0:
        return data
    widths = ((0, 0), (top, bottom), (left, right))
    if not mirror:
        return np.pad(data, widths, mode="constant", constant_values=np.nan)
    return np.pad(data, widths, mode="symmetric")


def in_raster(window: Window, grid: TileGrid) -> tuple[slice, slice]:
    """Row and column slices of ``window`` clipped to the raster."""
    r0 = max(0, int(window.row_off))
    c0 = max(0, int(window.col_off))
    r1 = min(grid.height, int(window.row_off + window.height))
    c1 = min(grid.width, int(window.col_off + window.width))
    return slice(r0, r1), slice(c0, c1)


def read_extent(
    info: RasterInfo, grid: TileGrid, i: int, j: int, bands: tuple[int, ...] | None = None
) -> np.ndarray:
    """Chunk ``(i, j)``'s extent clipped to the raster, read from ``info``'s file (float32,
    invalid pixels NaN; see :func:`~agriseg.io.raster.read_window`): ``bands`` (1-based),
    by default the model's."""
    window = Window.from_slices(*in_raster(grid.extent(i, j), grid))
    return read_window(info.path, bands or info.bands, window, plain=info.crs is None)


def core_of_extent(grid: TileGrid, i: int, j: int) -> tuple[slice, slice]:
    """Rows and columns of chunk ``(i, j)``'s core in its extent clipped to the raster."""
    core = grid.core(i, j)
    rows, cols = in_raster(grid.extent(i, j), grid)
    r_off, c_off = core.row_off - rows.start, core.col_off - cols.start
    return slice(r_off, r_off + core.height), slice(c_off, c_off + core.width)


@dataclass(frozen=True)
class ChunkValidity:
    """Where one chunk is valid, and which of its tiles the model sees."""

    valid: np.ndarray  # (core h, core w) bool
    run: np.ndarray  # (chunk tiles,) bool: whether the model sees the tile


@dataclass(frozen=True)
class ChunkBatch:
    """One chunk's tiles, ready for the model."""

    tiles: np.ndarray  # (N run, bands, tile, tile) float32, normalised: the tiles in ``run``
    valid: np.ndarray  # (core h, core w) bool
    run: np.ndarray  # (chunk tiles,) bool: whether the model sees the tile


def tiles_with_data(valid: np.ndarray, grid: TileGrid, i: int, j: int) -> np.ndarray:
    """Which of chunk ``(i, j)``'s tiles hold a valid pixel (``valid``: its extent clipped
    to the raster).

    A tile without one adds its probabilities only to invalid pixels (its own, and
    the outside of the raster its mirrored border reaches), which end up nodata
    whatever they hold: leaving it out changes no output.
    """
    columns = padded_extent(valid[None], grid, i, j)[0].any(axis=0)
    starts = np.arange(grid.chunk_tiles(j)) * grid.stride
    return np.array([columns[k : k + grid.tile].any() for k in starts], dtype=bool)


def chunk_validity(
    data: np.ndarray, grid: TileGrid, i: int, j: int, skip_empty: bool = True
) -> ChunkValidity:
    """Chunk ``(i, j)``'s validity from ``data``, its extent clipped to the raster (NaN
    invalid); with ``skip_empty``, only the tiles with a valid pixel run (see
    :func:`tiles_with_data`)."""
    valid_data = ~np.isnan(data[0])
    valid = valid_data[core_of_extent(grid, i, j)]
    n = grid.chunk_tiles(j)
    run = tiles_with_data(valid_data, grid, i, j) if skip_empty else np.ones(n, dtype=bool)
    return ChunkValidity(valid, run)


def cut_tiles(x: np.ndarray, run: np.ndarray, grid: TileGrid) -> np.ndarray:
    """The tiles of a chunk's (padded) extent ``x`` that ``run`` says the model sees,
    ``(N run, bands, tile, tile)`` float32 (a new array)."""
    starts = np.flatnonzero(run) * grid.stride
    tiles = np.stack([x[:, :, k : k + grid.tile] for k in starts])
    return tiles.astype("float32", copy=False)


def normalized_tiles(
    data: np.ndarray,
    grid: TileGrid,
    i: int,
    j: int,
    run: np.ndarray,
    dtype: str,
    norm: Normalization,
    mirror: bool = True,
) -> np.ndarray:
    """The tiles ``run`` says the model sees, cut from chunk ``(i, j)``'s raw extent
    ``data`` (clipped to the raster; see :func:`padded_extent`) and normalised where
    they lie: one copy, and no normalised extent."""
    tiles = cut_tiles(padded_extent(data, grid, i, j, mirror), run, grid)
    return normalize(tiles, dtype, norm, out=tiles)


def chunk_batch(
    data: np.ndarray,
    grid: TileGrid,
    i: int,
    j: int,
    dtype: str,
    norm: Normalization,
    skip_empty: bool = True,
    mirror: bool = True,
) -> ChunkBatch:
    """Cut chunk ``(i, j)``'s tiles from ``data``, its extent clipped to the raster,
    padded beyond it and normalised; with ``skip_empty`` only those with a valid pixel
    (see :func:`chunk_validity`, :func:`normalized_tiles`)."""
    chunk = chunk_validity(data, grid, i, j, skip_empty)
    if not chunk.run.any():  # nothing to normalise
        empty = np.empty((0, data.shape[0], grid.tile, grid.tile), dtype="float32")
        return ChunkBatch(empty, chunk.valid, chunk.run)
    tiles = normalized_tiles(data, grid, i, j, chunk.run, dtype, norm, mirror)
    return ChunkBatch(tiles, chunk.valid, chunk.run)


def infer_chunk(
    info: RasterInfo,
    grid: TileGrid,
    i: int,
    j: int,
    model_ref: str,
    device: str,
    threads: int,
    model_tile: int | None = None,
    engine: Engine = "torch",
    tta: bool = False,
    refine: RefineChoice = "none",
    skip_empty: bool = True,
    evidence: EvidencePlan | None = None,
) -> ChunkResult:
    """Read chunk ``(i, j)``'s extent (clipped to the raster) and run its tiles as one batch.

    The read happens in the task itself, so a chunk's input exists only while its
    task runs (read tasks of their own would run far ahead of the model).

    With ``model_tile``, the model sees the tiles resized to that edge (see
    :mod:`agriseg.segmentation.scale`);
    with ``tta``, each tile's probabilities are the mean of its eight D4 views; with
    ``refine``, a dense CRF refines them (see :mod:`agriseg.models.refine`). With
    ``skip_empty``, tiles without a valid pixel are left out of the batch (their
    probabilities are zero), and a chunk without any runs nothing. With ``evidence``,
    the bands it names are read and the core's evidence noted (see
    :mod:`agriseg.segmentation.evidence`).
    """
    reading = time.perf_counter()
    data = read_extent(info, grid, i, j, evidence.read if evidence else None)
    start = time.perf_counter()
    noted = None
    if evidence is not None:
        core = data[(slice(None), *core_of_extent(grid, i, j))]
        noted = core_evidence(evidence, core) if np.isfinite(core[0]).any() else None
        if evidence.model_rows != tuple(range(len(data))):  # the index's own bands too
            data = data[list(evidence.model_rows)]
    loading = time.perf_counter()
    predictor = get_predictor(model_ref, device, threads, engine)
    # The first chunks of a worker wait here while its model loads: "load", not "prepare".
    load_s = time.perf_counter() - loading
    # A network sees a mirrored field beyond the raster's edge; a model without one
    # measures rows and thresholds on the real pixels only (mirrored rows would cross).
    mirror = predictor.engine != "index"
    chunk = chunk_validity(data, grid, i, j, skip_empty)
    ran = int(chunk.run.sum())
    if not ran:
        prepare_s = time.perf_counter() - start - load_s
        return ChunkResult(
            None,
            chunk.valid,
            0.0,
            prepare_s,
            read_s=start - reading,
            evidence=noted,
            load_s=load_s,
        )
    weight = grid.weight_window()
    settled = None
    # The padded extent is made where it is used, so that no copy of it waits for the
    # model with the chunk (up to four chunks wait at once: 11 MB each at 512 px).
    if predictor.blends_on_device and refine == "none":
        window, where = _settled_in_row(grid, i, j)
        called = time.perf_counter()
        row = predictor.blended_row(
            padded_extent(data, grid, i, j, mirror),
            chunk.run,
            grid.stride,
            info.dtype,
            weight,
            where,
            model_tile,
            tta,
        )
        returned = time.perf_counter()
        acc, model_s = row.sums, row.seconds
        if row.classes is not None and row.confidence is not None:
            settled = SettledClasses(window, row.classes, row.confidence)
    else:
        norm = predictor.meta.normalization
        tiles = normalized_tiles(data, grid, i, j, chunk.run, info.dtype, norm, mirror)
        called = time.perf_counter()
        probs, model_s = predictor.probabilities(tiles, weight, model_tile, tta, refine)
        returned = time.perf_counter()
        if ran < len(chunk.run):
            every = np.zeros((len(chunk.run), *probs.shape[1:]), dtype=probs.dtype)
            every[chunk.run] = probs
            probs = every
        acc = join_row(probs, grid.stride)
    prepare_s = (called - start - load_s) + (time.perf_counter() - returned)
    return ChunkResult(
        acc,
        chunk.valid,
        model_s,
        prepare_s,
        read_s=start - reading,
        tiles_run=ran,
        evidence=noted,
        settled=settled,
        load_s=load_s,
    )


def _settled_in_row(grid: TileGrid, i: int, j: int) -> tuple[Window, Settled | None]:
    """Chunk ``(i, j)``'s settled window in the raster, and where it lies in the chunk's
    row of tiles with the weights summed there (None when it is empty)."""
    window = grid.settled(i, j)
    if not (window.height and window.width):
        return window, None
    rows, cols = _in(window, grid.extent(i, j))
    return window, Settled(rows, cols, grid.weight_sums(window))


def join_row(probs: np.ndarray, stride: int) -> np.ndarray:
    """A row of weighted tile probabilities ``(N, C, T, T)`` summed into float16 ``(C, T, W)``.

    Neighbouring tiles overlap by ``T - stride`` columns (at most half a tile, so never
    three at once): those are summed in float32 straight into the float16 row, the rest
    copied, so each value is rounded to float16 once: ~11 ms a 4-tile 512 px chunk,
    where summing into a zeroed float32 row and converting it took ~8x longer.
    """
    n, classes, tile, _ = probs.shape
    overlap = tile - stride
    acc = np.empty((classes, tile, (n - 1) * stride + tile), dtype="float16")
    acc[:, :, :tile] = probs[0]
    for k in range(1, n):
        left = k * stride
        np.add(
            probs[k - 1][:, :, stride:],
            probs[k][:, :, :overlap],
            out=acc[:, :, left : left + overlap],
            casting="same_kind",
        )
        acc[:, :, left + overlap : left + tile] = probs[k][:, :, overlap:]
    return acc


def empty_block(
    grid: TileGrid, i: int, j: int, n_classes: int, own: ChunkResult | None = None
) -> Block:
    """Chunk ``(i, j)``'s core when it holds no valid pixel: nodata (with ``own``'s timings).

    Its rasters are one read-only nodata value seen at the core's shape, which costs
    no memory: an orthomosaic's empty rectangle makes thousands of these.
    """
    core = grid.core(i, j)
    nodata = np.broadcast_to(np.uint8(NODATA), (core.height, core.width))
    own = own or ChunkResult(None, np.zeros((0, 0), dtype=bool), 0.0, 0.0)
    return Block(
        core,
        nodata,
        nodata,
        np.zeros(n_classes, dtype="int64"),
        np.zeros(n_classes),
        grid.chunk_tiles(j),
        own.model_s,
        own.prepare_s,
        own.read_s,
        own.tiles_run,
        has_data=False,
        load_s=own.load_s,
    )


def argmax_classes(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.argmax(probs, axis=0)`` as uint8 and ``probs.max(axis=0)`` of ``(C, H, W)``
    probabilities, class by class (the first class wins a tie, as in ``argmax``): one
    pass per class over contiguous rows, 1.6-2 x faster than ``argmax`` and ``max``
    across the class axis, which stride through memory (4 x 448 x 1344 float32)."""
    best = probs[0].copy()
    classes = np.zeros(best.shape, dtype="uint8")
    for c in range(1, len(probs)):
        np.copyto(classes, np.uint8(c), where=probs[c] > best)
        np.maximum(best, probs[c], out=best)
    return classes, best


def _around(outer: Window, inner: Window) -> list[Window]:
    """``outer`` less ``inner`` (inside it, maybe empty) as up to four windows: the
    rows above and below ``inner``, and beside it the columns before and after."""
    if not (inner.height and inner.width):
        return [outer]
    top, bottom = inner.row_off, inner.row_off + inner.height
    left, right = inner.col_off, inner.col_off + inner.width
    outer_bottom = outer.row_off + outer.height
    outer_right = outer.col_off + outer.width
    pieces = [
        Window(outer.col_off, outer.row_off, outer.width, top - outer.row_off),
        Window(outer.col_off, bottom, outer.width, outer_bottom - bottom),
        Window(outer.col_off, top, left - outer.col_off, inner.height),
        Window(right, top, outer_right - right, inner.height),
    ]
    return [w for w in pieces if w.height > 0 and w.width > 0]


def _blend(
    grid: TileGrid,
    window: Window,
    n_classes: int,
    neighbours: list[tuple[int, int]],
    parts: tuple[ChunkResult | None, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Classes and confidence (uint8) over ``window``, inside one core: the summed rows
    of the chunks whose tiles reach it, over the summed weights."""
    total = np.zeros((n_classes, window.height, window.width), dtype="float32")
    for (a, b), part in zip(neighbours, parts, strict=True):
        if part is None or part.acc is None:  # no tile of it ran: it adds nothing
            continue
        ext = grid.extent(a, b)
        r0 = max(window.row_off, ext.row_off + part.row_start)
        r1 = min(window.row_off + window.height, ext.row_off + ext.height)
        c0 = max(window.col_off, ext.col_off)
        c1 = min(window.col_off + window.width, ext.col_off + ext.width)
        if r0 >= r1 or c0 >= c1:
            continue
        top = ext.row_off + part.row_start
        total[
            :, r0 - window.row_off : r1 - window.row_off, c0 - window.col_off : c1 - window.col_off
        ] += part.acc[:, r0 - top : r1 - top, c0 - ext.col_off : c1 - ext.col_off]
    total /= grid.weight_sums(window)
    classes, best = argmax_classes(total)
    return classes, np.clip(np.rint(best * 100), 0, 100).astype("uint8")


def _in(window: Window, outer: Window) -> tuple[slice, slice]:
    """Rows and columns of ``window`` in the arrays of ``outer``, a window around it."""
    top, left = window.row_off - outer.row_off, window.col_off - outer.col_off
    return slice(top, top + window.height), slice(left, left + window.width)


def stitch_chunk(
    grid: TileGrid,
    i: int,
    j: int,
    info: RasterInfo,
    n_classes: int,
    evidence: EvidencePlan | None,
    *parts: ChunkResult | None,
) -> Block:
    """Blend the neighbouring chunks' contributions into chunk ``(i, j)``'s core
    (``n_classes``: the model's class count; a part is None where the file holds no
    valid pixel under its chunk, see :func:`known_empty`), and complete the evidence
    its chunk noted (see :mod:`agriseg.segmentation.evidence`). Where the chunk brings
    its settled classes (see :class:`SettledClasses`), only the rest is blended here."""
    core = grid.core(i, j)
    neighbours = grid.neighbours(i, j)
    own = parts[neighbours.index((i, j))]
    if own is None or not own.valid.any():  # nodata whatever the tiles say
        return empty_block(grid, i, j, n_classes, own)
    classes = np.empty((core.height, core.width), dtype="uint8")
    confidence = np.empty((core.height, core.width), dtype="uint8")
    rest = [core]
    if own.settled is not None:
        where = _in(own.settled.window, core)
        classes[where] = own.settled.classes
        confidence[where] = own.settled.confidence
        rest = _around(core, own.settled.window)
    for window in rest:
        where = _in(window, core)
        classes[where], confidence[where] = _blend(grid, window, n_classes, neighbours, parts)
    classes[~own.valid] = NODATA
    confidence[~own.valid] = NODATA
    noted = None
    if own.evidence is not None and evidence is not None:
        noted = block_evidence(evidence, own.evidence, classes, confidence)
    row_counts = np.stack([(classes == c).sum(axis=1) for c in range(n_classes)])
    rows = np.arange(core.row_off, core.row_off + core.height)
    row_area = pixel_area_rows_m2(info.crs, info.transform, rows, core.col_off + core.width / 2)
    return Block(
        window=core,
        classes=classes,
        confidence=confidence,
        pixels=row_counts.sum(axis=1),
        area_m2=row_counts @ row_area,
        tiles=grid.chunk_tiles(j),
        model_s=own.model_s,
        prepare_s=own.prepare_s,
        read_s=own.read_s,
        tiles_run=own.tiles_run,
        evidence=noted,
        load_s=own.load_s,
    )


def known_empty(coverage: Coverage | None, grid: TileGrid, i: int, j: int) -> bool:
    """Whether the file proves chunk ``(i, j)``'s extent holds no valid pixel (so it
    need not be read: none of its tiles would run)."""
    if coverage is None:
        return False
    return not coverage.any_valid(Window.from_slices(*in_raster(grid.extent(i, j), grid)))


def chunk_bytes(grid: TileGrid, j: int, bands: int, classes: int) -> int:
    """Bytes chunk column ``j`` holds while in flight: its float32 input and its float16
    probabilities, both the width of its extent and a tile high."""
    return grid.tile * grid.extent(0, j).width * (4 * bands + 2 * classes)


def _row_blocks(
    client: Client,
    grid: TileGrid,
    i: int,
    n_classes: int,
    empty: list[int],
    stitches: dict[int, Future],
) -> Iterator[tuple[int, Block]]:
    """Chunk row ``i``'s blocks with their column, as they are ready: the ``empty`` ones
    (made here), then the ``stitches`` (released once taken)."""
    for j in empty:
        yield j, empty_block(grid, i, j, n_classes)
    column = {future.key: j for j, future in stitches.items()}
    for future in as_completed(list(stitches.values()), loop=client.loop):
        block = future.result()
        future.release()
        yield column[future.key], block


def segment_blocks(
    client: Client,
    info: RasterInfo,
    grid: TileGrid,
    model_ref: str,
    device: str,
    threads: int | None = None,
    model_tile: int | None = None,
    engine: Engine = "torch",
    tta: bool = False,
    classes: int = 4,
    refine: RefineChoice = "none",
    evidence: EvidencePlan | None = None,
) -> Iterator[Block]:
    """Yield every core block of the raster, computed on ``client``'s cluster.

    Chunks are submitted in row order: the row after the one being stitched, then as
    many more (up to :data:`LOOKAHEAD_ROWS` rows) as fit in :data:`LOOKAHEAD_BYTES`
    (``classes``: the model's class count, for the estimate; see :func:`chunk_bytes`).
    A chunk is cut down to the rows the next row's cores need as soon as the cores
    beside it are stitched, and released once the next row is stitched too; so about
    one row of full chunks is held however wide the raster, plus the byte budget.
    ``threads`` (default: :data:`~agriseg.models.inference.DEFAULT_FORWARD_THREADS`) is the
    intra-op thread count of every forward pass on every worker, so outputs do not
    depend on where chunks ran. ``model_tile``, when it differs from ``grid.tile``,
    is the edge tiles are resized to for the model. ``engine`` runs the model (see
    :func:`~agriseg.models.inference.resolve_engine`). With ``evidence``, each block
    carries what the run's verdict takes of it (see :mod:`agriseg.segmentation.evidence`).
    """
    threads = threads or DEFAULT_FORWARD_THREADS
    skip_empty = agriseg.classes.SKIP_EMPTY
    coverage = read_coverage(info.path) if skip_empty else None
    pending: dict[tuple[int, int], Future | None] = {}  # None: known empty, not read
    order = [(i, j) for i in range(grid.chunk_rows) for j in range(grid.chunk_cols)]
    cost = [chunk_bytes(grid, j, len(info.bands), classes) for j in range(grid.chunk_cols)]

    def submit(i: int, j: int) -> None:
        if known_empty(coverage, grid, i, j):
            pending[(i, j)] = None
            return
        task = dask.delayed(infer_chunk, pure=False)(
            info,
            grid,
            i,
            j,
            model_ref,
            device,
            threads,
            model_tile,
            engine,
            tta,
            refine,
            skip_empty,
            evidence,
        )
        pending[(i, j)] = client.compute(task, priority=-i)

    submitted = 0  # chunks submitted so far, in ``order``
    for i in range(grid.chunk_rows):
        # Stitching row i needs row i + 1; beyond it, submit what the budget allows.
        needed = min(len(order), (i + 2) * grid.chunk_cols)
        limit = min(len(order), (i + 2 + LOOKAHEAD_ROWS) * grid.chunk_cols)
        budget = LOOKAHEAD_BYTES
        while submitted < limit:
            extra = submitted >= needed
            if extra and budget < cost[order[submitted][1]]:
                break
            if extra:
                budget -= cost[order[submitted][1]]
            submit(*order[submitted])
            submitted += 1
        # A core whose own chunk is known empty is nodata: made here, no task.
        empty = [j for j in range(grid.chunk_cols) if pending[(i, j)] is None]
        stitches = {
            j: client.submit(
                stitch_chunk,
                grid,
                i,
                j,
                info,
                classes,
                evidence,
                *[pending[n] for n in grid.neighbours(i, j)],
                priority=10 - i,
                pure=False,
            )
            for j in range(grid.chunk_cols)
            if pending[(i, j)] is not None
        }
        stitched = [False] * grid.chunk_cols
        for j, block in _row_blocks(client, grid, i, classes, empty, stitches):
            yield block
            stitched[j] = True
            if i + 1 == grid.chunk_rows:
                continue
            # When core j completes the cores beside chunk (i, b) (j is one of them,
            # so this happens once per chunk), the chunk is cut down to the rows row
            # i + 1's cores need (from their first row), as the row goes.
            for b in range(max(0, j - 1), min(grid.chunk_cols, j + 2)):
                users = range(max(0, b - 1), min(grid.chunk_cols, b + 2))
                if all(stitched[c] for c in users):
                    keep_from = grid.core(i + 1, b).row_off - grid.extent(i, b).row_off
                    full = pending[(i, b)]
                    if full is None:
                        continue
                    pending[(i, b)] = client.submit(bottom_rows, full, keep_from, priority=10 - i)
                    full.release()
        for j in range(grid.chunk_cols):
            pending.pop((i - 1, j), None)
    pending.clear()

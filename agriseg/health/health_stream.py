"""Running the field-health pass beside the segmentation, strip by strip.

A :class:`HealthStream` takes the blocks a run writes, assembles them into strips
(:class:`agriseg.health.strips.StripAssembler`) and hands each strip, as soon as it is
complete, to a :class:`agriseg.health.products.HealthJob` running on a background thread.
Sieving, polygonising and writing the polygons therefore overlap inference; only
the last strip and the whole-raster summaries (areas, preview, zones) remain once
the last tile is stitched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rasterio.windows import Window

from agriseg.health.products import HealthJob
from agriseg.health.strips import Strip, StripAssembler
from agriseg.health.task_runner import TaskRunner

#: Strips waiting for the health thread; bounds the memory they hold.
QUEUE_STRIPS = 2


class _Abort(Exception):
    """The producer failed: the health pass stops and leaves no products."""


_END = object()
_ABORT = object()


class HealthStream:
    """The health pass of a run, fed block by block from the segmentation loop.

    Use as a context manager; call :meth:`add` for every block and :meth:`finish`
    once all are added. Errors of the health thread come out of :meth:`add` or
    :meth:`finish`; leaving the ``with`` block on an error stops the thread.

    Args:
        job: The planned health pass.
        image_path: The segmented image (for the preview).
        out_dir: Folder the products are written to.
        stem: Base name of the products.
        runner: Where the panes are sieved and polygonised (see :meth:`HealthJob.run`).
    """

    def __init__(
        self,
        job: HealthJob,
        image_path: Path | None,
        out_dir: Path,
        stem: str,
        runner: TaskRunner | None = None,
    ) -> None:
        grid = job.grid
        self._assembler = StripAssembler(grid.height, grid.width, job.strip_height, job.halo)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_STRIPS)
        self._job = job
        self._args = (image_path, out_dir, stem, runner)
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._waited = 0.0
        self._closed = False  # the end (or abort) marker has been taken
        self._busy = 0.0
        self._thread = threading.Thread(target=self._work, name="agriseg-health", daemon=True)

    def __enter__(self) -> HealthStream:
        self._thread.start()
        return self

    def _strips(self) -> Iterator[Strip]:
        while True:
            start = time.perf_counter()
            item = self._queue.get()
            self._waited += time.perf_counter() - start
            if item is _END or item is _ABORT:
                self._closed = True
            if item is _END:
                return
            if item is _ABORT:
                raise _Abort
            assert isinstance(item, Strip)
            yield item

    def _work(self) -> None:
        start = time.perf_counter()
        try:
            self._result = self._job.run(self._strips(), *self._args)
        except BaseException as exc:  # handed to the producer
            self._error = exc
            # Keep taking strips so that the producer never blocks on a full queue.
            while not self._closed:
                item = self._queue.get()
                self._closed = item is _END or item is _ABORT
        finally:
            self._busy = time.perf_counter() - start - self._waited

    def _put(self, item: object) -> None:
        self._raise_error()
        self._queue.put(item)

    def _raise_error(self) -> None:
        if self._error is not None and not isinstance(self._error, _Abort):
            raise self._error

    def add(self, window: Window, classes: np.ndarray, confidence: np.ndarray) -> None:
        """Take one written block of the class and confidence rasters."""
        for strip in self._assembler.add(window, classes, confidence):
            self._put(strip)

    def add_nodata(self, window: Window) -> None:
        """Take one written block that is nodata throughout."""
        for strip in self._assembler.add(window):
            self._put(strip)

    def finish(self) -> dict[str, Any]:
        """Wait for the pass to end; return its summary (see ``write_health_products``)."""
        if not self._assembler.done:
            raise RuntimeError("HealthStream.finish: blocks are missing")
        self._put(_END)
        self._thread.join()
        self._raise_error()
        assert self._result is not None
        return self._result

    @property
    def busy_s(self) -> float:
        """Seconds the health thread worked (not waiting for strips); final after finish."""
        return self._busy

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread.is_alive():
            self._queue.put(_ABORT)
            self._thread.join()

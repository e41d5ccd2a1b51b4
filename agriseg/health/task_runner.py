"""Where the health pass's parallel tasks run: a Dask cluster, local worker processes or
this thread, behind one callable (:class:`TaskRunner`).

The tasks are pure functions (:func:`agriseg.health.pane_polygons.run_pane`, the
GeoJSON text of a slice of polygons), so the products never depend on where they ran.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agriseg.health.pane_polygons import (
    start_worker,
    warm_up,
)

if TYPE_CHECKING:
    from distributed import Client


#: Pixels below which a health pass without ``workers`` runs in this process: starting
#: worker processes (about a second of imports each) costs more than they save on a
#: pass of a second or two (8 Mpx: two 2048 x 2048 panes; `agriseg bench`'s 2048² stays
#: in one process).
PARALLEL_MIN_PX = 8_388_608


def default_workers() -> int:
    """Processes of a health pass without a Dask cluster: one per core it may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


T = TypeVar("T")


T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """A task running somewhere (a concurrent or Dask future)."""

    def result(self) -> T_co: ...

    def done(self) -> bool: ...


@dataclass(frozen=True)
class TaskRunner:
    """Where the parallel tasks of a health pass run (the panes, :func:`run_pane`, and
    the GeoJSON text, :func:`~agriseg.health.geojson.feature_text`): ``runner(fn, *args)``
    starts ``fn(*args)`` and returns its pending result.

    Attributes:
        submit: Starts ``fn(*args)`` (an executor's or a Dask client's ``submit``).
        parallel: How many tasks run at once (the work of a strip is cut in at least
            that many tasks).
        local: Whether the tasks run on this machine (so they can read its files).
    """

    submit: Callable[..., Pending[Any]]
    parallel: int = 1
    local: bool = True

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Pending[T]:
        return self.submit(fn, *args)


def run_inline(fn: Callable[..., T], /, *args: Any) -> Pending[T]:
    done: Future[T] = Future()
    done.set_result(fn(*args))
    return done


@contextlib.contextmanager
def task_runner(
    client: Client | None, workers: int | None, pixels: int = 0, spare_cores: int | None = None
) -> Iterator[TaskRunner]:
    """Where the tasks of a health pass run: panes sieved and polygonised
    (:func:`run_pane`) and polygons made into GeoJSON text.

    On ``client``'s Dask workers when the run has a cluster; else on ``workers``
    local processes (default: one per core for rasters of ``pixels`` >=
    :data:`PARALLEL_MIN_PX`, else one; at most one per core in ``spare_cores``, the
    cores the segmentation beside the pass leaves free), or in this thread for one.
    GDAL's ``shapes`` and the polygon building hold the GIL, so threads would not
    help. Beside a segmentation on the CPU, whose forwards take every core, processes
    do not help either: on two cores a 4096² run took 10.6-10.8 s with the pass in its
    thread and 10.8-11.7 s with two processes, which held 230 MB more.
    """
    if client is not None:

        def on_cluster(fn: Callable[..., T], /, *args: Any) -> Pending[T]:
            return client.submit(fn, *args, pure=False)  # type: ignore[no-any-return]

        yield TaskRunner(on_cluster, max(1, sum(client.nthreads().values())), local=False)
        return
    if workers is None:
        workers = default_workers() if pixels >= PARALLEL_MIN_PX else 1
        if spare_cores is not None:
            workers = max(1, min(workers, spare_cores))
    if workers == 1:
        yield TaskRunner(run_inline)
        return
    # Spawned, not forked: the parent runs threads (Dask's, the preview's). Ctrl-C is
    # the parent's to handle: it shuts the pool down.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
    )
    try:
        for _ in range(workers):  # each submit to a pool without an idle process starts one
            pool.submit(warm_up, "agriseg.health.geojson")
        yield TaskRunner(pool.submit, workers)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    # Every result is in: let the processes exit on their own instead of waiting.
    pool.shutdown(wait=False)

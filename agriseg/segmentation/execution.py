"""Where Dask runs the work: a local in-process cluster, local worker processes, or
an existing Dask distributed cluster. agriseg never schedules tasks itself."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
from collections.abc import Callable, Iterator

import dask
from distributed import Client, LocalCluster

from agriseg.errors import InputError
from agriseg.models.inference import default_threads
from agriseg.segmentation.numpy_pages import HUGEPAGE_ENV

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_address(explicit: str | None) -> str | None:
    """``--scheduler`` if given, else the ``DASK_SCHEDULER_ADDRESS`` environment variable."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


def local_threads() -> int:
    # Reads and decoding run on spare threads while one thread feeds the model.
    return default_threads() + 2


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


#: glibc's ``M_ARENA_MAX`` option of ``mallopt``, and the arenas agriseg allows.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _default_arena_max() -> int:
    """glibc's arena cap when the program sets none: ``MALLOC_ARENA_MAX`` if set, else
    8 per core on 64-bit (2 on 32-bit; glibc 2.44 lowered it to ``max(8, cores)``)."""
    value = os.environ.get("MALLOC_ARENA_MAX", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return (8 if ctypes.sizeof(ctypes.c_long) == 8 else 2) * (os.cpu_count() or 2)


@contextlib.contextmanager
def limited_malloc_arenas() -> Iterator[None]:
    """Let threads started inside share :data:`MALLOC_ARENAS` glibc heaps (else no-op).

    glibc gives threads up to 8 heaps per core, each keeping its own freed memory;
    with Dask's worker threads, the forward threads and the health thread that grew
    peak RSS with the raster's width (4096² run: 1924 -> 1797 MB, 1024²: 1457 -> 1498,
    same speed).

    The cap is process-wide and cannot truly be scoped: glibc latches it the first
    time a thread needs a new arena (``narenas_limit`` in ``arena_get2``) and never
    removes arenas, and ``mallopt`` has no getter nor a way back to "unset". So the
    setting is put back to glibc's default on exit, which takes effect only where
    no arena was created meanwhile.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        yield
        return
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    try:
        yield
    finally:
        mallopt(_M_ARENA_MAX, _default_arena_max())


@contextlib.contextmanager
def frozen_objects() -> Iterator[None]:
    """Leave the objects that exist on entering (modules, classes, the caller's own) out
    of the cyclic garbage collector's passes while inside (``gc.freeze``), then put
    them back (``gc.unfreeze``); a no-op when the caller has frozen objects itself.

    The polygons and Dask's bookkeeping make the collector run often, and each full
    pass walked the hundreds of thousands of objects that imports left: a 4096² run
    took 14.4-14.5 CPU-s with them frozen, 14.6-15.1 without (7.7-7.8 s against
    7.9-8.1 s, three pairs on two cores).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_free_memory() -> None:
    """Hand the heap memory this process has freed back to the system (glibc; else no-op).

    glibc keeps freed memory for reuse, so the segmentation's peak would stay resident
    under the field-health pass that follows it; ``malloc_trim`` returns it (measured:
    4096² run peak 2056 -> 1869 MB). Unlike lowering ``M_TRIM_THRESHOLD`` for the
    whole run, it does not make every forward pass fault its buffers in again (that
    cost ~40% of CPU inference speed).
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def worker_environment() -> dict[str, object]:
    """What Dask sets in the environment of the worker processes a run starts, before
    they start (``distributed.nanny.pre-spawn-environ``): Dask's own settings, and
    NumPy's huge pages as in
    :func:`~agriseg.segmentation.numpy_pages.numpy_small_pages` (off, unless
    :data:`HUGEPAGE_ENV` is set here)."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    return {**environ, HUGEPAGE_ENV: os.environ.get(HUGEPAGE_ENV, "0")}


#: The scheduler always serves HTTP (health checks); keep it on a free loopback port
#: so concurrent runs do not clash over 8787, and skip the dashboard itself.
_NO_DASHBOARD: dict = {
    "dashboard_address": "127.0.0.1:0",
    "scheduler_kwargs": {"dashboard": False},
    "silence_logs": logging.CRITICAL,
}


@contextlib.contextmanager
def _quiet_distributed_logs() -> Iterator[None]:
    """Silence the ``distributed`` logger (its shutdown chatter) and restore its level after."""
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


#: Dask settings of the cluster a run starts in its own process (one worker, its
#: threads, no dashboard): the periodic work of its event loop that nothing reads
#: here (the system monitor, the worker's statistical profiler, work stealing
#: between workers it does not have; memory checked each second, not ten times a
#: second; the loop's responsiveness ticks) cost the event loop 0.31-0.40 CPU-s of a
#: 2048² run on two cores, 0.20-0.21 CPU-s with these.
IN_PROCESS_CONFIG: dict[str, object] = {
    "distributed.admin.system-monitor.interval": "60s",
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.tick.interval": "200ms",
}


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A Dask client for one run, closed (with any cluster it started) afterwards."""
    address = scheduler_address(scheduler)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_distributed_logs())
        if address:
            try:
                client = Client(address, timeout="20s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"cannot reach the Dask scheduler at {address} ({exc}); check --scheduler "
                    f"or {SCHEDULER_ENV}"
                ) from None
        elif workers is not None:
            if workers < 1:
                raise InputError(f"--workers {workers} must be at least 1")
            with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment()}):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=2,
                    processes=True,
                    host="127.0.0.1",
                    **_NO_DASHBOARD,
                )
            stack.enter_context(cluster)
            client = Client(cluster, set_as_default=False)
        else:
            stack.enter_context(limited_malloc_arenas())
            stack.enter_context(dask.config.set(IN_PROCESS_CONFIG))
            cluster = LocalCluster(
                n_workers=1,
                threads_per_worker=local_threads(),
                processes=False,
                **_NO_DASHBOARD,
            )
            stack.enter_context(cluster)
            client = Client(cluster, set_as_default=False)
        with client:
            yield client

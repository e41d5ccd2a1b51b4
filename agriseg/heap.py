"""glibc heap settings: how many heaps threads share, when freed memory goes back to
the system, and a heap kept for worker processes. Each is a no-op where the C library
is not glibc (``mallopt`` or ``malloc_trim`` missing)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Iterator

import numpy as np


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


#: glibc ``mallopt`` options: allocations served by ``mmap`` at most, and the free
#: memory at the heap's top kept before it is given back.
_M_MMAP_MAX = -4
_M_TRIM_THRESHOLD = -1


def keep_heap(reserve_bytes: int = 0) -> None:
    """Serve this process's allocations from one heap that keeps what is freed, with
    ``reserve_bytes`` of it touched now (glibc; else no-op). For worker processes that
    run one kind of task again and again.

    By default glibc maps every large array afresh and unmaps it when freed, so each
    task faults its pages in (and the kernel zeroes them) again: the health pass's
    worker processes spent 0.3-0.5 s of kernel time on a 4096² pass for 1.4 s of
    work. With no ``mmap`` and no trimming, each page is faulted in once; the reserve
    (the heap a task needs) is faulted in while the worker waits for its first task.
    The process's peak memory stays what its largest task needs.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    if reserve_bytes > 0:
        reserve = np.ones(reserve_bytes, dtype="uint8")  # written, so every page is faulted
        del reserve


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

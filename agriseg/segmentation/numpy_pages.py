"""NumPy's requests for transparent huge pages, turned off while a run lasts.

NumPy asks the kernel for transparent huge pages (``madvise``) for every array of 4 MB
or more. A run makes and frees such arrays for every chunk (its tiles, their
probabilities, its blended rows), and where the kernel gives huge pages only on
request (``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``madvise``, as on
many distributions) every such array is faulted in again 2 MB at a time, each page
zeroed whole. On a 2-core VM, zeroing pages took 10-16 % of a 2048² run's CPU
samples, 0.1-0.2 % without; the run took 4.4-4.7 CPU-s instead of 4.8-5.2, a whole
4096² run 9.4-9.6 s instead of 9.8-10.3. Setting :data:`HUGEPAGE_ENV` yourself keeps
your choice: nothing is switched then.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator

#: NumPy's own switch, read when it is imported (``0`` off, ``1`` on).
HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"


def _hugepage_switch() -> Callable[[bool], bool] | None:
    """NumPy's runtime switch for its huge-page requests (it returns the previous
    setting), where this NumPy has one."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            switch = getattr(importlib.import_module(module), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if switch is not None:
            return switch  # type: ignore[no-any-return]
    return None


def _switch_unless_set() -> Callable[[bool], bool] | None:
    """The switch, or None when :data:`HUGEPAGE_ENV` says what the user wants."""
    return None if HUGEPAGE_ENV in os.environ else _hugepage_switch()


@contextlib.contextmanager
def numpy_small_pages() -> Iterator[None]:
    """NumPy's new arrays on the kernel's ordinary pages while inside (then as before)."""
    switch = _switch_unless_set()
    if switch is None:
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)


def small_pages_for_good() -> None:
    """In a worker process a run starts: NumPy's huge pages off for the process's
    life, as :func:`numpy_small_pages` does for a run."""
    switch = _switch_unless_set()
    if switch is not None:
        switch(False)


def numpy_huge_pages() -> bool | None:
    """Whether NumPy asks for huge pages now (None where it has no switch)."""
    switch = _hugepage_switch()
    if switch is None:
        return None
    now = switch(True)
    switch(now)
    return now

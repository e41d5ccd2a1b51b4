"""glibc heap settings of agriseg's processes (no-ops elsewhere)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agriseg.heap import _libc_function

pytestmark = pytest.mark.skipif(
    _libc_function("mallopt") is None, reason="glibc's mallopt is not available"
)

#: In a fresh interpreter: page faults of sixteen 48 MB arrays (above glibc's largest
#: mmap threshold, 32 MB) allocated, written and freed one after the other, with or
#: without keep_heap's reserve.
FAULTS = """
import resource, sys
import numpy as np
from agriseg.heap import keep_heap
if sys.argv[1] == "keep":
    keep_heap(80 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
    a = np.ones(48 * 2**20, dtype="uint8")
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_keep_heap_faults_a_task_s_memory_in_once_not_for_every_task() -> None:
    # By default each array is mapped afresh and its pages faulted in (and zeroed) again
    # (fewer faults than pages where the kernel gives numpy huge pages); kept, the
    # reserve's pages are reused.
    default, kept = _faults("default"), _faults("keep")
    assert default > 16 * 100, default
    assert kept < default / 20, (kept, default)

"""NumPy's arrays go on small pages during a run, in the run's worker processes too, and
the process is left as it was found (see :mod:`agriseg.segmentation.numpy_pages`)."""

from __future__ import annotations

import pytest

from agriseg.health.task_runner import task_runner
from agriseg.segmentation.execution import dask_client, worker_environment
from agriseg.segmentation.numpy_pages import (
    HUGEPAGE_ENV,
    _hugepage_switch,
    numpy_huge_pages,
    numpy_small_pages,
)


@pytest.mark.parametrize("before", [True, False])
def test_a_run_asks_numpy_for_small_pages_and_puts_the_setting_back(monkeypatch, before) -> None:
    monkeypatch.delenv(HUGEPAGE_ENV, raising=False)
    switch = _hugepage_switch()
    assert switch is not None
    original = switch(before)
    try:
        with numpy_small_pages():
            assert numpy_huge_pages() is False
        assert numpy_huge_pages() is before
    finally:
        switch(original)


def test_numpy_huge_pages_stay_as_the_user_set_them(monkeypatch) -> None:
    monkeypatch.setenv(HUGEPAGE_ENV, "1")
    before = numpy_huge_pages()
    with numpy_small_pages():
        assert numpy_huge_pages() is before
    assert worker_environment()[HUGEPAGE_ENV] == "1"
    monkeypatch.delenv(HUGEPAGE_ENV)
    assert worker_environment()[HUGEPAGE_ENV] == "0"


def test_local_worker_processes_get_numpy_small_pages(monkeypatch) -> None:
    monkeypatch.delenv(HUGEPAGE_ENV, raising=False)
    with dask_client(workers=1) as client:
        assert client.submit(numpy_huge_pages, pure=False).result() is False


def test_health_worker_processes_get_numpy_small_pages(monkeypatch) -> None:
    monkeypatch.delenv(HUGEPAGE_ENV, raising=False)
    with task_runner(None, workers=2) as run:
        assert [run(numpy_huge_pages).result() for _ in range(2)] == [False, False]

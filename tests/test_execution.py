"""The Dask client of a run, and NumPy's pages during a run, leave the process as
they found it."""

from __future__ import annotations

import logging

import pytest

from agriseg.segmentation.execution import (
    HUGEPAGE_ENV,
    _hugepage_switch,
    dask_client,
    numpy_small_pages,
    worker_environment,
)


def test_distributed_logger_is_quiet_during_the_run_and_restored_after() -> None:
    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        with dask_client() as client:
            assert client.submit(sum, [1, 2]).result() == 3
            assert logger.level == logging.CRITICAL
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)


def _hugepages_now() -> bool:
    switch = _hugepage_switch()
    assert switch is not None, "this NumPy has no huge-page switch"
    setting = switch(True)
    switch(setting)
    return setting


@pytest.mark.parametrize("before", [True, False])
def test_a_run_asks_numpy_for_small_pages_and_puts_the_setting_back(monkeypatch, before) -> None:
    monkeypatch.delenv(HUGEPAGE_ENV, raising=False)
    switch = _hugepage_switch()
    assert switch is not None
    original = switch(before)
    try:
        with numpy_small_pages():
            assert _hugepages_now() is False
        assert _hugepages_now() is before
    finally:
        switch(original)


def test_numpy_huge_pages_stay_as_the_user_set_them(monkeypatch) -> None:
    monkeypatch.setenv(HUGEPAGE_ENV, "1")
    before = _hugepages_now()
    with numpy_small_pages():
        assert _hugepages_now() is before
    assert worker_environment()[HUGEPAGE_ENV] == "1"
    monkeypatch.delenv(HUGEPAGE_ENV)
    assert worker_environment()[HUGEPAGE_ENV] == "0"


def test_local_worker_processes_get_numpy_small_pages(monkeypatch) -> None:
    monkeypatch.delenv(HUGEPAGE_ENV, raising=False)

    def setting() -> bool:  # in the worker process: what its NumPy does
        from agriseg.segmentation.execution import _hugepage_switch

        switch = _hugepage_switch()
        assert switch is not None
        now = switch(True)
        switch(now)
        return now

    with dask_client(workers=1) as client:
        assert client.submit(setting, pure=False).result() is False

"""The Dask client of a run leaves the process's logging as it found it, and the
garbage collector's frozen objects too."""

from __future__ import annotations

import gc
import logging

from agriseg.segmentation.execution import dask_client, frozen_objects


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


def test_a_run_freezes_the_objects_it_finds_and_thaws_them_after() -> None:
    assert gc.get_freeze_count() == 0
    existing: list[list] = [[]]  # a container the collector tracks
    with frozen_objects():
        assert gc.get_freeze_count() > 0
        assert not any(o is existing for o in gc.get_objects())  # left out of its passes
    assert gc.get_freeze_count() == 0
    assert any(o is existing for o in gc.get_objects())


def test_objects_the_caller_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with frozen_objects():
            assert gc.get_freeze_count() == before
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()

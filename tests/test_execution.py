"""The Dask client of a run leaves the process's logging as it found it."""

from __future__ import annotations

import logging

from agriseg.segmentation.execution import dask_client


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

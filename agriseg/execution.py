"""Where Dask runs the work: a local in-process cluster, local worker processes, or
an existing Dask distributed cluster. agriseg never schedules tasks itself."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

from agriseg.errors import InputError
from agriseg.heap import limited_malloc_arenas
from agriseg.inference import default_threads

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_address(explicit: str | None) -> str | None:
    """``--scheduler`` if given, else the ``DASK_SCHEDULER_ADDRESS`` environment variable."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


def local_threads() -> int:
    # Reads and decoding run on spare threads while one thread feeds the model.
    return default_threads() + 2


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

"""An exclusive lock on a results folder, so two batches never write it at once.

The lock is ``fcntl.flock`` on a file in the folder: the kernel releases it when its
process exits, however it exits, so a lock left by a killed run is never stale.
The file records who holds the lock, for the message a second process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from agriseg.errors import LockedError, OutputError

LOCK_NAME = ".agriseg.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a folder lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host}, started {self.started})"


def _read_holder(fd: int) -> LockHolder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", errors="replace")
    try:
        return LockHolder(**json.loads(text))
    except (ValueError, TypeError):
        return None


@contextlib.contextmanager
def folder_lock(directory: Path, command: str) -> Iterator[LockHolder | None]:
    """Hold the lock on ``directory`` for the block; raise :class:`LockedError` if taken.

    Yields the holder recorded by a previous process that died while holding the
    lock (its lock was recovered), else ``None``.
    """
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot create the lock file ({exc.strerror}); choose a writable --out"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if holder else "another agriseg process"
            raise LockedError(
                f"{directory}: results folder is in use by {who}; wait for it to finish "
                "or use another --out"
            ) from None
        previous = _read_holder(fd)
        me = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=command,
        )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(asdict(me)).encode())
        try:
            yield previous
        finally:
            # An empty file tells the next holder this one finished cleanly.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)

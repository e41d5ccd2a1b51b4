"""Atomic file output: write under a temporary name, rename into place when complete.

A reader never sees a half-written output: until :func:`atomic_output` finishes, the
file exists only as a hidden temporary (``.NAME.agriseg-tmp-PID``) in the same
directory, and a crashed or killed run leaves at most such temporaries, which
:func:`remove_stale_temporaries` clears on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from agriseg.errors import OutputError

TMP_MARK = ".agriseg-tmp-"


def temporary_name(final: Path) -> Path:
    """The temporary sibling that ``final`` is written as."""
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TMP_MARK in path.name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporaries in ``directory`` whose writing process is gone."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        if not is_temporary(path):
            continue
        pid_text = path.name.rsplit(TMP_MARK, 1)[1].split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        removed.append(path)
    return removed


def describe_os_error(path: Path, exc: OSError) -> str:
    """One-line, actionable description of a failure to write ``path``."""
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device; free space or choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot write here (permission denied); choose a writable --out"
    return f"{path}: cannot write ({exc.strerror or exc}); check --out"


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` only on success.

    On any exception the temporary is removed and the exception propagates (an
    ``OSError`` is turned into :class:`OutputError` naming ``final``).
    """
    tmp = temporary_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(describe_os_error(final, exc)) from exc
        raise


def write_text_atomic(final: Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically (fsynced before the rename)."""
    with atomic_output(final) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())

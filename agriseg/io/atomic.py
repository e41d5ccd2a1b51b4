"""Atomic file output: write under a temporary name, rename into place when complete.

A reader never sees a half-written output: until its writer finishes, a file exists
only as a hidden temporary (``.NAME.agriseg-tmp-PID.EXT``) in the same directory.
:class:`OutputTransaction` renames a whole set of files into place together, after
they are complete and fsynced, so a run leaves all of its outputs or none. A crashed
or killed run leaves at most such temporaries, which :func:`remove_stale_temporaries`
clears on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from agriseg.errors import AgrisegError, OutputError

TMP_MARK = ".agriseg-tmp-"


def temporary_name(final: Path) -> Path:
    """The temporary sibling that ``final`` is written as (same suffix, for drivers)."""
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}{final.suffix}")


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
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def describe_os_error(path: Path, exc: OSError) -> str:
    """One-line, actionable description of a failure to write ``path``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{path}: no space left on the device; free space or choose another --out"
    if exc.errno == errno.EFBIG:
        return (
            f"{path}: file too large for the device or the file-size limit (no space to "
            "write it); free space, raise the limit (ulimit -f) or choose another --out"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot write here (permission denied); choose a writable --out"
    return f"{path}: cannot write ({exc.strerror or exc}); check --out"


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputTransaction:
    """A set of output files that appear under their final names together, or not at all.

    :meth:`stage` hands out the temporary path to write each file to; :meth:`commit`
    fsyncs them and renames them into place; :meth:`discard` deletes them.
    :meth:`remove` marks a file that the committed set replaces as a whole (an earlier
    run's product it does not write again): it goes on commit, and stays on discard.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}
        self._folders: list[Path] = []
        self._removed: set[Path] = set()

    def stage(self, final: Path) -> Path:
        """The temporary path to write ``final`` to."""
        tmp = temporary_name(final)
        self._staged[final] = tmp
        return tmp

    def staged(self, final: Path) -> Path:
        """The temporary ``final`` is being written to (see :meth:`stage`)."""
        return self._staged[final]

    def staging_folder(self, directory: Path, purpose: str) -> Path:
        """A private temporary folder in ``directory`` for code that writes many files.

        Files written there become part of the transaction with :meth:`adopt`; the
        folder itself is removed on commit or discard.
        """
        folder = temporary_name(directory / purpose)
        folder.mkdir()
        self._folders.append(folder)
        return folder

    def adopt(self, tmp: Path, final: Path) -> None:
        """Make the finished temporary file ``tmp`` appear as ``final`` on commit."""
        self._staged[final] = tmp

    def remove(self, final: Path) -> None:
        """Delete ``final`` on commit (unless a staged file takes its name)."""
        self._removed.add(final)

    def final_name(self, path: Path) -> Path:
        """The final name of a staged temporary (``path`` itself if it is not one)."""
        for final, tmp in self._staged.items():
            if tmp == path:
                return final
        return path

    def commit(self) -> None:
        for tmp in self._staged.values():
            _fsync(tmp)
        for final, tmp in self._staged.items():
            os.replace(tmp, final)
        removed = self._removed - set(self._staged)
        for final in removed:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
        for directory in {final.parent for final in [*self._staged, *removed]}:
            _fsync(directory, directory=True)
        self._staged.clear()
        self._removed.clear()
        self._remove_folders()

    def discard(self) -> None:
        for tmp in self._staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._staged.clear()
        self._removed.clear()
        self._remove_folders()

    def _remove_folders(self) -> None:
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()


@contextlib.contextmanager
def output_transaction() -> Iterator[OutputTransaction]:
    """An :class:`OutputTransaction` committed on success and discarded on any exception.

    An ``OSError`` (other than an :class:`OutputError`) becomes an :class:`OutputError`
    naming the final file it was writing.
    """
    transaction = OutputTransaction()
    try:
        yield transaction
        transaction.commit()
    except BaseException as exc:
        filename = getattr(exc, "filename", None)
        path = transaction.final_name(Path(filename)) if filename else Path("output")
        transaction.discard()
        if isinstance(exc, OSError) and not isinstance(exc, AgrisegError):
            raise OutputError(describe_os_error(path, exc)) from exc
        raise


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` only on success."""
    with output_transaction() as transaction:
        yield transaction.stage(final)


def write_text_atomic(final: Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically (fsynced before the rename)."""
    with atomic_output(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _missing_ancestors(directory: Path) -> list[Path]:
    missing = []
    for path in (directory, *directory.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _folder_error(directory: Path, reason: str | None) -> OutputError:
    return OutputError(
        f"{directory}: cannot create the output folder ({reason}); choose a writable --out"
    )


def check_output_folder(directory: Path) -> None:
    """Raise :class:`OutputError` if a file holds the name of ``directory`` or of a
    folder above it, so it cannot become an output folder; creates nothing."""
    for path in (directory, *directory.parents):
        if path.is_dir():
            return
        if path.exists():
            what = "a file of that name exists" if path == directory else f"{path} is a file"
            raise _folder_error(directory, what)


@contextlib.contextmanager
def output_folder(directory: Path) -> Iterator[Path]:
    """Create ``directory`` for a run's outputs; on failure remove what this created.

    A run into a fresh folder that fails leaves no folder behind; an existing folder
    is kept, cleared of temporaries left by killed runs.
    """
    check_output_folder(directory)
    created = _missing_ancestors(directory.absolute())
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(directory, exc.strerror) from None
    remove_stale_temporaries(directory)
    try:
        yield directory
    except BaseException:
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise

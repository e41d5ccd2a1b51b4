"""Exceptions raised by agriseg.

Every error subclasses :class:`AgrisegError` and a builtin, so callers can catch
either. Messages name the file or value at fault and say what to do about it.
"""

from __future__ import annotations


class AgrisegError(Exception):
    """Root of all agriseg errors."""


class InputError(AgrisegError, ValueError):
    """An input raster, vector or option is unusable as given."""


class RasterReadError(AgrisegError, OSError):
    """A raster could not be opened or read (missing, corrupt, truncated)."""


class ModelError(AgrisegError, ValueError):
    """A model name or checkpoint is unknown, corrupt or does not fit the input."""


class OutputError(AgrisegError, OSError):
    """Outputs could not be written (permissions, disk full)."""


class LockedError(AgrisegError, RuntimeError):
    """Another agriseg process holds the lock on a results folder."""


class MissingDependencyError(AgrisegError, ImportError):
    """An optional dependency a command needs is not installed (e.g. PyTorch)."""


class UnreliableMapError(AgrisegError, RuntimeError):
    """A run's map is judged unreliable, so nothing may act on it without ``--force``."""

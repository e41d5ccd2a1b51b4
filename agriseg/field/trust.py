"""The gate between a map and what acts on it: plant counts and sprayer prescriptions.

A run judged ``unreliable`` (see :mod:`agriseg.reliability`) is refused before
anything is written, with one line naming the reason; ``force`` lets it through,
and the override is recorded in what is then written. A plant count is also refused
when the row or plant spacing it found is under :data:`MIN_RESOLVED_PX` pixels: the
imagery cannot resolve it, so the lattice is noise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agriseg.errors import UnreliableMapError
from agriseg.health.verdict import Reliability

#: Fewest pixels between rows, and between plants of a row, that a survey resolves.
MIN_RESOLVED_PX = 4.0


class FinishedRun(Protocol):
    """A finished run as :func:`agriseg.prescriptions.find_runs` finds it."""

    @property
    def stem(self) -> str: ...

    @property
    def summary(self) -> dict[str, Any]: ...

    @property
    def summary_path(self) -> Path: ...


def run_reliability(run: FinishedRun) -> Reliability | None:
    """The verdict recorded in a run's summary (None: made before verdicts existed)."""
    data = run.summary.get("reliability")
    return None if data is None else Reliability.from_json(data)


def override_record(reliability: Reliability | None, forced: bool) -> dict[str, Any]:
    """What a product made from a run records of the run's verdict."""
    if reliability is None:
        return {"verdict": None, "reasons": ["run made without reliability checks"]}
    record: dict[str, Any] = {"verdict": reliability.verdict, "reasons": reliability.reasons}
    if forced and reliability.verdict == "unreliable":
        record["forced"] = True
        record["override"] = "made from an unreliable map because --force was given"
    return record


def admit(runs: Sequence[FinishedRun], action: str, force: bool) -> dict[str, dict[str, Any]]:
    """Check every run before anything is written; the record of each, by stem.

    Raises:
        UnreliableMapError: a run is ``unreliable`` and ``force`` is False.
    """
    records = {}
    for run in runs:
        reliability = run_reliability(run)
        if reliability is not None and reliability.verdict == "unreliable" and not force:
            raise UnreliableMapError(
                f"{run.summary_path}: refusing to {action} from an UNRELIABLE map "
                f"({'; '.join(reliability.reasons)}); nothing written; add --force to "
                "act on it anyway"
            )
        records[run.stem] = override_record(reliability, force)
    return records


def check_resolved(
    where: Path, row_spacing_px: float, plant_spacing_px: float, force: bool
) -> dict[str, Any]:
    """Refuse a plant lattice finer than the imagery resolves; what was measured.

    Raises:
        UnreliableMapError: a spacing is under :data:`MIN_RESOLVED_PX` and ``force``
            is False.
    """
    spacings = {"row_spacing_px": row_spacing_px, "plant_spacing_px": plant_spacing_px}
    short = {k: v for k, v in spacings.items() if v < MIN_RESOLVED_PX}
    record: dict[str, Any] = {k: round(v, 2) for k, v in spacings.items()}
    if short and not force:
        found = ", ".join(
            f"{k.removesuffix('_px').replace('_', ' ')} {v:.1f} px" for k, v in short.items()
        )
        raise UnreliableMapError(
            f"{where}: refusing to count plants: {found} is below the {MIN_RESOLVED_PX:g} px "
            "this imagery resolves, so rows and plants are not really seen; nothing written; "
            "use imagery flown lower, or add --force"
        )
    if short:
        record["override"] = "spacing below what the imagery resolves; --force was given"
    return record


def stamp_for(run: FinishedRun, record: dict[str, Any]) -> Callable[[Path], None] | None:
    """What marks a GeoPackage made from ``run`` with its verdict and any override."""
    from agriseg.health.reliability_stamps import stamp_geopackage

    reliability = run_reliability(run)
    if reliability is None:
        return None
    overrides = [record.get("override"), record.get("spacing", {}).get("override")]
    return functools.partial(
        stamp_geopackage,
        reliability=reliability,
        override="; ".join(o for o in overrides if o) or None,
    )

"""A run's reliability verdict as data: ``ok``, ``doubtful`` or ``unreliable``, the
checks behind it and their reasons, and the line that leads the printed summary.

The checks themselves, gathered during a run, are :mod:`agriseg.reliability`; here
is what every product that shows or acts on the verdict reads back (the summary's
``reliability`` object): the preview and GeoPackage stamps, the gate of plant counts
and prescriptions, the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["ok", "doubtful", "unreliable"]
#: Verdicts from best to worst.
VERDICTS: tuple[Verdict, ...] = ("ok", "doubtful", "unreliable")

#: What a verdict tells the reader, first on the summary line.
HEADLINES: dict[Verdict, str] = {
    "ok": "OK",
    "doubtful": "DOUBTFUL (check in the field before acting",
    "unreliable": "UNRELIABLE (model out of its depth",
}


@dataclass(frozen=True)
class Check:
    """One check of a run: its level, why (None when ``ok``), and what it measured."""

    name: str
    level: Verdict
    reason: str | None
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "reason": self.reason, **self.values}


@dataclass(frozen=True)
class Reliability:
    """A run's verdict and the checks behind it."""

    verdict: Verdict
    checks: tuple[Check, ...]
    calibration: str | None = None

    @property
    def reasons(self) -> list[str]:
        """Reasons of the checks that set the verdict or warn, worst first."""
        ranked = sorted(self.checks, key=lambda c: -VERDICTS.index(c.level))
        return [c.reason for c in ranked if c.reason and c.level != "ok"]

    def headline(self) -> str:
        """The verdict as it leads the printed summary: ``UNRELIABLE (model out of its
        depth: reason; reason)``."""
        if self.verdict == "ok":
            return HEADLINES["ok"]
        return f"{HEADLINES[self.verdict]}: {'; '.join(self.reasons)})"

    def to_json(self) -> dict[str, Any]:
        """The ``reliability`` object of ``summary.json``."""
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "calibration": self.calibration,
            "checks": {c.name: c.to_json() for c in self.checks},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reliability:
        checks = tuple(
            Check(
                name,
                value["level"],
                value.get("reason"),
                {k: v for k, v in value.items() if k not in ("level", "reason")},
            )
            for name, value in data.get("checks", {}).items()
        )
        return cls(data["verdict"], checks, data.get("calibration"))


def worst(levels: list[Verdict]) -> Verdict:
    return max(levels, key=VERDICTS.index, default="ok")


#: Checks that look at the pixels (the others at the file and the model).
EVIDENCE_CHECKS = ("vegetation", "confidence", "colour", "index_gap", "chroma", "rows")


def judge(checks: list[Check]) -> Verdict:
    """The verdict: the worst check's level; ``unreliable`` also when two of the
    pixel checks (:data:`EVIDENCE_CHECKS`) doubt the map independently."""
    doubts = sum(c.level == "doubtful" for c in checks if c.name in EVIDENCE_CHECKS)
    return "unreliable" if doubts >= 2 else worst([c.level for c in checks])

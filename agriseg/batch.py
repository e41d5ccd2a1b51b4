"""Nightly batch processing: every survey in a folder, each isolated and resumable.

:func:`run_batch` segments each matching raster into ``RESULTS/<stem>/`` with
:func:`agriseg.run.segment_raster`. ``RESULTS/manifest.json`` records, per
survey, its status, error, timings, outputs and the input fingerprint, and is
rewritten atomically after every change: a survey is done only when its entry says
``succeeded``. A survey whose input, model and options match a succeeded entry is
skipped, so a rerun after a crash or a failure only redoes what is missing. A
folder lock keeps a second batch out of the same results while one runs.

Progress goes to the ``agriseg.batch`` logger; the command line decides where.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from agriseg import __version__
from agriseg.config import RunConfig
from agriseg.errors import AgrisegError, InputError, OutputError
from agriseg.io.atomic import remove_stale_temporaries, write_text_atomic
from agriseg.io.locking import folder_lock
from agriseg.models.registry import resolve
from agriseg.run import RunResult, segment_raster

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOG_DIR_NAME = "logs"

#: A survey's state in the manifest. ``running`` or ``interrupted`` after a crash
#: or Ctrl-C: the next batch redoes it.
Status = Literal["running", "succeeded", "failed", "interrupted"]

#: What one batch did with a survey.
Outcome = Literal["succeeded", "failed", "skipped"]

#: Options that do not change the results, so a change does not redo a survey.
_EXECUTION_ONLY = ("device", "scheduler", "workers", "batch_size", "threads", "engine")


@dataclass(frozen=True)
class BatchOptions:
    """How to pick and redo surveys.

    Attributes:
        pattern: glob selecting the survey rasters inside the survey folder.
        force: redo surveys even when a matching result exists.
        checksum: when size or modification time changed, compare SHA-256 contents
            before redoing (for files re-copied unchanged).
    """

    pattern: str = "*.tif"
    force: bool = False
    checksum: bool = False


@dataclass(frozen=True)
class SurveyOutcome:
    """What a batch did with one survey."""

    name: str
    input: Path
    outcome: Outcome
    seconds: float
    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    """Every survey's outcome and where the manifest is."""

    manifest: Path
    surveys: tuple[SurveyOutcome, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[SurveyOutcome, ...]:
        return tuple(s for s in self.surveys if s.outcome == "failed")

    @property
    def ok(self) -> bool:
        return not self.failed


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log_path(results_dir: Path, when: datetime | None = None) -> Path:
    """The night's log file, ``RESULTS/logs/agriseg-YYYYMMDD.log`` (folder created)."""
    day = (when or datetime.now()).strftime("%Y%m%d")
    folder = results_dir / LOG_DIR_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot create the log folder ({exc.strerror}); choose a writable --out"
        ) from None
    return folder / f"agriseg-{day}.log"


def find_surveys(survey_dir: Path, pattern: str) -> list[Path]:
    """The rasters matching ``pattern`` in ``survey_dir``, sorted; stems must be unique."""
    if not survey_dir.is_dir():
        raise InputError(f"{survey_dir}: no such folder; give the folder holding the surveys")
    found = sorted(p for p in survey_dir.glob(pattern) if not p.name.startswith("."))
    if not found:
        raise InputError(
            f"{survey_dir}: no file matches {pattern!r}; check the folder or --pattern"
        )
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem:
            raise InputError(
                f"{by_stem[path.stem].name} and {path.name} would both write to "
                f"<out>/{path.stem}/; rename one or narrow --pattern"
            )
        by_stem[path.stem] = path
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: Path, checksum: bool = False) -> dict[str, Any]:
    """Size and modification time of ``path`` (and its SHA-256 when ``checksum``)."""
    stat = path.stat()
    found: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if checksum:
        found["sha256"] = sha256(path)
    return found


def same_input(path: Path, recorded: dict[str, Any], checksum: bool) -> bool:
    """Whether ``path`` is still the input ``recorded`` describes."""
    current = fingerprint(path)
    if current["size"] != recorded.get("size"):
        return False
    if current["mtime_ns"] == recorded.get("mtime_ns"):
        return True
    return checksum and "sha256" in recorded and sha256(path) == recorded["sha256"]


def run_key(config: RunConfig) -> dict[str, Any]:
    """The model and the options that shape the results; equal keys, equal outputs."""
    weights = resolve(config.model)
    options = {k: v for k, v in asdict(config).items() if k not in _EXECUTION_ONLY}
    key = {"model": str(weights), "model_sha256": sha256(weights), **options}
    # As the manifest will hold it (tuples become lists), so keys compare equal.
    return dict(json.loads(json.dumps(key, default=str)))


def health_digest(summary: dict[str, Any]) -> dict[str, Any]:
    """A survey's field health for the manifest: the model's classes with their roles and
    shares of the valid area, and the health indices."""
    health = summary.get("health", {})
    return {
        "classes": {
            name: {"role": c.get("role"), "share": c.get("share")}
            for name, c in health.get("classes", {}).items()
        },
        **{
            key: health.get(key)
            for key in ("vegetation_cover", "weed_pressure", "disease_incidence", "health_score")
        },
    }


def run_outputs(result: RunResult, results_dir: Path) -> dict[str, str]:
    """Every file a run wrote, relative to ``results_dir``."""
    products = {k: Path(v) for k, v in result.summary.get("outputs", {}).items()}
    return {k: str(p.relative_to(results_dir)) for k, p in {**result.outputs, **products}.items()}


class Manifest:
    """``RESULTS/manifest.json``: one entry per survey, saved atomically on each change."""

    def __init__(self, path: Path, survey_dir: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"surveys": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"{path}: unreadable manifest ({exc}); move it away to start afresh"
                ) from None
        self.data.setdefault("surveys", {})
        self.data["agriseg_version"] = __version__
        self.data["survey_dir"] = str(survey_dir.resolve())

    @property
    def surveys(self) -> dict[str, dict[str, Any]]:
        return self.data["surveys"]

    def update(self, name: str, **entry: Any) -> None:
        self.surveys[name] = entry
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        write_text_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def _is_done(
    entry: dict[str, Any] | None,
    path: Path,
    key: dict[str, Any],
    results_dir: Path,
    checksum: bool,
) -> bool:
    return (
        entry is not None
        and entry.get("status") == "succeeded"
        and entry.get("run_key") == key
        and all((results_dir / p).exists() for p in entry.get("outputs", {}).values())
        and same_input(path, entry.get("fingerprint", {}), checksum)
    )


def _process(
    path: Path, results_dir: Path, config: RunConfig, manifest: Manifest, base: dict[str, Any]
) -> SurveyOutcome:
    name = path.stem
    started = now()
    clock = time.perf_counter()
    manifest.update(name, **base, status="running", started=started, pid=os.getpid())
    try:
        result = segment_raster(path, results_dir / name, config)
    except AgrisegError as exc:
        error = str(exc)
    except BaseException as exc:
        seconds = round(time.perf_counter() - clock, 3)
        if not isinstance(exc, Exception):  # Ctrl-C or exit: record it, then stop.
            manifest.update(name, **base, status="interrupted", started=started, seconds=seconds)
            raise
        # One survey's unexpected failure must not cost the rest of the night;
        # the traceback goes to the log for a bug report.
        log.exception("%s: unexpected error", path)
        error = f"{path}: unexpected error ({type(exc).__name__}: {exc}); see the log"
    else:
        seconds = round(time.perf_counter() - clock, 3)
        outputs = run_outputs(result, results_dir)
        manifest.update(
            name,
            **base,
            status="succeeded",
            error=None,
            warnings=result.warnings,
            started=started,
            finished=now(),
            seconds=seconds,
            outputs=outputs,
            timings_s=result.summary.get("timings_s", {}),
            health=health_digest(result.summary),
        )
        return SurveyOutcome(name, path, "succeeded", seconds, warnings=tuple(result.warnings))
    seconds = round(time.perf_counter() - clock, 3)
    manifest.update(
        name,
        **base,
        status="failed",
        error=error,
        started=started,
        finished=now(),
        seconds=seconds,
        outputs={},
    )
    return SurveyOutcome(name, path, "failed", seconds, error=error)


def run_batch(
    survey_dir: Path,
    results_dir: Path,
    config: RunConfig,
    options: BatchOptions | None = None,
) -> BatchResult:
    """Segment every survey in ``survey_dir`` into ``results_dir``; see the module doc.

    A survey that fails is recorded and the batch goes on; errors raised from here
    are about the batch itself (no surveys, results folder locked or unwritable).
    """
    options = options or BatchOptions()
    surveys = find_surveys(survey_dir, options.pattern)
    key = run_key(config)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{results_dir}: cannot create the results folder ({exc.strerror}); "
            "choose a writable --out"
        ) from None
    with folder_lock(results_dir, f"agriseg batch {survey_dir}") as previous:
        if previous is not None:
            log.warning(
                "recovered the lock of %s, which stopped without finishing",
                previous.describe(),
            )
        remove_stale_temporaries(results_dir)
        manifest = Manifest(results_dir / MANIFEST_NAME, survey_dir)
        manifest.data["last_batch"] = {
            "started": now(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        log.info("batch of %d survey(s) from %s into %s", len(surveys), survey_dir, results_dir)
        outcomes = []
        for n, path in enumerate(surveys, start=1):
            tag = f"[{n}/{len(surveys)}] {path.name}"
            entry = manifest.surveys.get(path.stem)
            if not options.force and _is_done(entry, path, key, results_dir, options.checksum):
                log.info("%s: already done, skipped", tag)
                outcomes.append(SurveyOutcome(path.stem, path, "skipped", 0.0))
                continue
            log.info("%s: segmenting", tag)
            base = {
                "input": str(path.resolve()),
                "fingerprint": fingerprint(path, options.checksum),
                "run_key": key,
            }
            outcome = _process(path, results_dir, config, manifest, base)
            if outcome.outcome == "failed":
                log.error("%s: failed: %s", tag, outcome.error)
            else:
                log.info("%s: done in %.1f s", tag, outcome.seconds)
            for warning in outcome.warnings:
                log.warning("%s: %s", tag, warning)
            outcomes.append(outcome)
        counts = Counter(s.outcome for s in outcomes)
        manifest.data["last_batch"].update(
            finished=now(), **{o: counts[o] for o in ("succeeded", "failed", "skipped")}
        )
        manifest.save()
        log.info(
            "batch finished: %d succeeded, %d failed, %d skipped",
            counts["succeeded"],
            counts["failed"],
            counts["skipped"],
        )
    return BatchResult(manifest.path, tuple(outcomes))

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
from agriseg.io.atomic import check_output_folder, remove_stale_temporaries, write_text_atomic
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
        pattern: glob selecting the survey rasters inside the survey folder; None:
            every ``.tif`` and ``.tiff`` file, in any letter case (``NORTH.TIF``).
        force: redo surveys even when a matching result exists.
        checksum: when size or modification time changed, compare SHA-256 contents
            before redoing (for files re-copied unchanged).
    """

    pattern: str | None = None
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
    verdict: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """Every survey's outcome, where the manifest is, and the files of the survey
    folder that were not surveys (the pattern left them out)."""

    manifest: Path
    surveys: tuple[SurveyOutcome, ...] = field(default_factory=tuple)
    ignored: tuple[Path, ...] = ()

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


#: Suffixes of the surveys a batch takes without ``--pattern`` (in any letter case).
SURVEY_SUFFIXES = (".tif", ".tiff")


def find_surveys(survey_dir: Path, pattern: str | None) -> tuple[list[Path], list[Path]]:
    """The rasters matching ``pattern`` in ``survey_dir`` (see :class:`BatchOptions`),
    sorted, and the other files there; survey stems must be unique."""
    if not survey_dir.is_dir():
        raise InputError(f"{survey_dir}: no such folder; give the folder holding the surveys")
    visible = [p for p in survey_dir.iterdir() if not p.name.startswith(".")]
    if pattern is None:
        found = sorted(p for p in visible if p.suffix.lower() in SURVEY_SUFFIXES and p.is_file())
    else:
        found = sorted(p for p in survey_dir.glob(pattern) if not p.name.startswith("."))
    ignored = sorted(p for p in visible if p.is_file() and p not in found)
    if not found:
        wanted = (
            "no .tif or .tiff file is there" if pattern is None else f"no file matches {pattern!r}"
        )
        raise InputError(f"{survey_dir}: {wanted}; check the folder or --pattern")
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem:
            raise InputError(
                f"{by_stem[path.stem].name} and {path.name} would both write to "
                f"<out>/{path.stem}/; rename one or narrow --pattern"
            )
        by_stem[path.stem] = path
    return found, ignored


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


def reliability_digest(summary: dict[str, Any]) -> dict[str, Any]:
    """A survey's reliability verdict and its reasons for the manifest."""
    reliability = summary.get("reliability") or {}
    return {"verdict": reliability.get("verdict"), "reasons": reliability.get("reasons", [])}


def run_outputs(result: RunResult, results_dir: Path) -> dict[str, str]:
    """Every file a run wrote, by kind (as its summary's ``outputs``), relative to
    ``results_dir``."""
    return {k: p.relative_to(results_dir).as_posix() for k, p in result.outputs.items()}


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
            reliability=reliability_digest(result.summary),
        )
        verdict = reliability_digest(result.summary)["verdict"]
        return SurveyOutcome(
            name, path, "succeeded", seconds, warnings=tuple(result.warnings), verdict=verdict
        )
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


@dataclass(frozen=True)
class BatchPlan:
    """A batch checked before anything is written (see :func:`plan_batch`)."""

    survey_dir: Path
    results_dir: Path
    config: RunConfig
    options: BatchOptions
    surveys: tuple[Path, ...]
    ignored: tuple[Path, ...]
    key: dict[str, Any]


def plan_batch(
    survey_dir: Path,
    results_dir: Path,
    config: RunConfig,
    options: BatchOptions | None = None,
) -> BatchPlan:
    """Find the surveys and check the results folder and the model; writes nothing, so
    a batch that cannot run leaves nothing behind."""
    options = options or BatchOptions()
    surveys, ignored = find_surveys(survey_dir, options.pattern)
    check_output_folder(results_dir)
    key = run_key(config)
    return BatchPlan(survey_dir, results_dir, config, options, tuple(surveys), tuple(ignored), key)


def _named(paths: tuple[Path, ...], most: int = 10) -> str:
    names = ", ".join(p.name for p in paths[:most])
    return names + (f" and {len(paths) - most} more" if len(paths) > most else "")


def run_batch(
    survey_dir: Path,
    results_dir: Path,
    config: RunConfig,
    options: BatchOptions | None = None,
) -> BatchResult:
    """Segment every survey in ``survey_dir`` into ``results_dir``; see the module doc."""
    return execute_batch(plan_batch(survey_dir, results_dir, config, options))


def execute_batch(plan: BatchPlan) -> BatchResult:
    """Run a planned batch (:func:`plan_batch`).

    A survey that fails is recorded and the batch goes on; errors raised from here
    are about the batch itself (results folder locked or unwritable).
    """
    results_dir, options = plan.results_dir, plan.options
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{results_dir}: cannot create the results folder ({exc.strerror}); "
            "choose a writable --out"
        ) from None
    with folder_lock(results_dir, f"agriseg batch {plan.survey_dir}") as previous:
        if previous is not None:
            log.warning(
                "recovered the lock of %s, which stopped without finishing",
                previous.describe(),
            )
        remove_stale_temporaries(results_dir)
        manifest = Manifest(results_dir / MANIFEST_NAME, plan.survey_dir)
        manifest.data["last_batch"] = {
            "started": now(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "not_surveys": [p.name for p in plan.ignored],
        }
        surveys = plan.surveys
        log.info(
            "batch of %d survey(s) from %s into %s", len(surveys), plan.survey_dir, results_dir
        )
        if plan.ignored:
            log.info(
                "%d file(s) there are not surveys (%s): %s",
                len(plan.ignored),
                "not .tif or .tiff" if options.pattern is None else f"not {options.pattern!r}",
                _named(plan.ignored),
            )
        outcomes = []
        for n, path in enumerate(surveys, start=1):
            tag = f"[{n}/{len(surveys)}] {path.name}"
            entry = manifest.surveys.get(path.stem)
            if not options.force and _is_done(entry, path, plan.key, results_dir, options.checksum):
                log.info("%s: already done, skipped", tag)
                verdict = (entry or {}).get("reliability", {}).get("verdict")
                outcomes.append(SurveyOutcome(path.stem, path, "skipped", 0.0, verdict=verdict))
                continue
            log.info("%s: segmenting", tag)
            base = {
                "input": str(path.resolve()),
                "fingerprint": fingerprint(path, options.checksum),
                "run_key": plan.key,
            }
            outcome = _process(path, results_dir, plan.config, manifest, base)
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
    return BatchResult(manifest.path, tuple(outcomes), plan.ignored)

"""The names of a run's products, and which files of an output folder belong to a run,
so that a rerun replaces them whole.

A run of input ``<stem>`` lists every file it wrote in ``<stem>.summary.json``, the
summary included: ``outputs`` maps each kind (:data:`OUTPUT_SUFFIXES`)
to a file name in the folder. Plant counts and prescriptions made later are added to
that list. The list is what the run owns:

* a rerun into the folder removes the listed files that it does not write again, in
  its output transaction, so a failed rerun leaves the earlier run whole and a
  successful one leaves nothing stale (see :func:`record_outputs`);
* any other file at the name of a product (the input itself, a generator's truth, a
  user's file) stops the command before it writes anything (:func:`check_free`).
  agriseg never replaces or removes a file it did not write.

Only names of registered products of ``<stem>`` count: a summary can never make
agriseg touch another file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agriseg.errors import OutputError
from agriseg.io.atomic import OutputTransaction

#: The name of every file agriseg writes for input ``<stem>`` into a run's folder:
#: ``<stem>`` + suffix, by kind. The kinds are the keys of the summary's ``outputs``;
#: plants and prescriptions are added after the run.
OUTPUT_SUFFIXES = {
    "classes": ".classes.tif",
    "classes_aux": ".classes.tif.aux.xml",  # its category names (see category_names_pam)
    "classes_qml": ".classes.qml",  # its QGIS style (agriseg.health.qgis.class_raster_style)
    "confidence": ".confidence.tif",
    "summary": ".summary.json",
    "geojson": ".health.geojson",
    "gpkg": ".health.gpkg",
    "fgb": ".health.fgb",
    "qml": ".health.qml",
    "preview": ".preview.png",
    "plants_gpkg": ".plants.gpkg",
    "plants_json": ".plants.json",
    "prescription_gpkg": ".prescription.gpkg",
    "spot_shp": ".spot.shp.zip",
    "zones_shp": ".zones.shp.zip",
    "taskdata": ".taskdata.zip",
    "prescription_json": ".prescription.json",
    "sieved": ".sieved.tif",  # the health pass's working copy, never kept
}

#: Kinds written by ``agriseg plants`` and ``agriseg prescribe`` (also after
#: ``run``/``batch`` with ``--plants``/``--prescribe``).
PLANT_KINDS = ("plants_gpkg", "plants_json")
#: (:data:`agriseg.field.prescriptions.PRESCRIPTION_SUFFIXES` names the same files.)
PRESCRIPTION_KINDS = (
    "prescription_gpkg",
    "spot_shp",
    "zones_shp",
    "taskdata",
    "prescription_json",
)

#: What the segmentation writes (the health pass writes the rest).
RUN_KINDS = ("classes", "classes_aux", "classes_qml", "confidence", "summary")


def output_paths(out_dir: Path, stem: str, kinds: tuple[str, ...] = RUN_KINDS) -> dict[str, Path]:
    """Where ``agriseg run`` writes each product of ``kinds`` for input ``stem``."""
    return {kind: out_dir / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def output_kind(stem: str, name: str) -> str | None:
    """The kind of the file ``name`` among the products of input ``stem`` (None: not one)."""
    for kind, suffix in OUTPUT_SUFFIXES.items():
        if name == f"{stem}{suffix}" and kind != "sieved":
            return kind
    return None


def summary_path(out_dir: Path, stem: str) -> Path:
    return output_paths(out_dir, stem, ("summary",))["summary"]


def _read_summary(path: Path) -> dict[str, Any] | None:
    """The run summary at ``path``, or None when there is none or it is no JSON object."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # agriseg writes summaries atomically: never half
        return None
    return summary if isinstance(summary, dict) else None


def owned_outputs(out_dir: Path, stem: str) -> dict[str, Path]:
    """The files the last run of ``stem`` in ``out_dir`` wrote, by kind (empty: none)."""
    summary = _read_summary(summary_path(out_dir, stem))
    if summary is None:
        return {}
    owned: dict[str, Path] = {}
    listed = summary.get("outputs")
    for value in (listed if isinstance(listed, dict) else {}).values():
        # Summaries of earlier versions held paths (keyed by file name); now names.
        name = Path(str(value)).name
        kind = output_kind(stem, name)
        if kind is not None:
            owned[kind] = out_dir / name
    if "summary" not in owned and "agriseg_version" in summary:
        # Written before summaries listed every output: the rasters and the summary
        # were always written together.
        owned.update(output_paths(out_dir, stem, RUN_KINDS))
    return owned


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_free(
    out_dir: Path, stem: str, kinds: Iterable[str], inputs: Iterable[Path] = ()
) -> dict[str, Path]:
    """The paths of the products ``kinds`` of ``stem`` in ``out_dir``, once each is
    checked to be free or a product of the earlier run of ``stem`` there.

    Raises:
        OutputError: A product's name is taken by one of ``inputs`` or by a file the
            summary there does not list (agriseg did not write it).
    """
    paths = output_paths(out_dir, stem, tuple(kinds))
    owned = set(owned_outputs(out_dir, stem).values())
    sources = [Path(p) for p in inputs]
    for kind, path in paths.items():
        if not (path.exists() or path.is_symlink()):
            continue
        if any(_same_file(path, source) for source in sources):
            raise OutputError(
                f"{path}: is an input of this command, and its {kind} output would "
                "replace it; choose another --out"
            )
        if path not in owned:
            raise OutputError(
                f"{path}: exists and agriseg did not write it ({summary_path(out_dir, stem).name} "
                "there does not list it), so it is left alone and nothing was written; move "
                "it away or choose another --out"
            )
    return paths


def listing(stem: str, paths: Iterable[Path]) -> dict[str, str]:
    """The summary's ``outputs`` for the products ``paths`` of ``stem``: kind → file
    name, in the order of :data:`OUTPUT_SUFFIXES`."""
    kinds: dict[str, str] = {}
    for path in paths:
        kind = output_kind(stem, path.name)
        if kind is None:
            raise ValueError(f"{path} is not a product of {stem}")  # a bug, not input
        kinds[kind] = path.name
    return {k: kinds[k] for k in OUTPUT_SUFFIXES if k in kinds}


def record_outputs(
    transaction: OutputTransaction,
    out_dir: Path,
    stem: str,
    written: Iterable[Path],
    replaces: Iterable[str] = (),
) -> None:
    """Add the products ``written`` (paths in ``out_dir``) to the outputs the summary
    of ``stem`` lists, staged in ``transaction``; the listed products of the kinds
    ``replaces`` that were not written again are removed on commit.

    Raises:
        OutputError: ``out_dir`` holds no agriseg summary of ``stem``.
    """
    path = summary_path(out_dir, stem)
    summary = _read_summary(path)
    if summary is None:
        raise OutputError(f"{path}: missing or not a run summary; rerun agriseg run")
    owned = owned_outputs(out_dir, stem)
    new = {output_kind(stem, p.name): p for p in written}
    for kind in set(replaces) - set(new):
        if kind in owned:
            transaction.remove(owned.pop(kind))
    outputs = [*owned.values(), *new.values()]
    summary["outputs"] = listing(stem, outputs)
    tmp = transaction.stage(path)
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")

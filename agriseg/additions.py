"""Prescriptions written beside finished runs and listed in their summaries.

:func:`agriseg.prescriptions.prescribe` writes the files; :func:`prescribe_runs`
first checks that their names are free or the run's own (see
:mod:`agriseg.ownership`) and afterwards lists them in each run's
``<stem>.summary.json``, replacing the run's earlier prescriptions as a whole.
(Plant counts list themselves: :func:`agriseg.plants.count_run`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agriseg.atomic import output_transaction
from agriseg.outputs import PRESCRIPTION_KINDS
from agriseg.ownership import check_free, record_outputs
from agriseg.prescriptions import (
    PrescriptionOptions,
    PrescriptionResult,
    find_runs,
    prescribe,
)


def prescribe_runs(
    run_dir: Path,
    options: PrescriptionOptions,
    out_dir: Path | None = None,
    stems: Sequence[str] | None = None,
) -> list[PrescriptionResult]:
    """:func:`~agriseg.prescriptions.prescribe`, listing the files in each run's
    summary when they go beside the run's outputs (``out_dir`` None)."""
    if out_dir is not None:
        return prescribe(run_dir, options, out_dir, stems)
    runs = [r for r in find_runs(run_dir) if stems is None or r.stem in stems]
    inputs = [options.fields] if options.fields else []
    for run in runs:
        check_free(run.run_dir, run.stem, PRESCRIPTION_KINDS, inputs)
    results = prescribe(run_dir, options, None, stems)
    # prescribe finds the same runs in the same order
    for run, result in zip(runs, results, strict=True):
        with output_transaction() as transaction:
            record_outputs(
                transaction,
                run.run_dir,
                run.stem,
                result.outputs.values(),
                replaces=PRESCRIPTION_KINDS,
            )
    return results

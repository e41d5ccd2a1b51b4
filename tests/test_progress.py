"""The command line's progress bar: drawn on stderr once the total and rate are known."""

from __future__ import annotations

import time

import pytest
from agriseg_cli.common import PROGRESS_DELAY_S, progress_bar


def report(quiet: bool, steps: int, pause_s: float) -> None:
    with progress_bar("segmenting", quiet) as progress:
        progress(0, steps)
        for done in range(1, steps + 1):
            time.sleep(pause_s)
            progress(done, steps)


def test_bar_is_drawn_only_once_total_and_rate_are_known(
    capfd: pytest.CaptureFixture[str],
) -> None:
    report(quiet=False, steps=4, pause_s=PROGRESS_DELAY_S / 2)
    out, err = capfd.readouterr()
    assert out == ""
    assert "4/4" in err and "tile/s" in err
    assert "0tile [" not in err and "?tile/s" not in err


def test_quick_steps_and_quiet_draw_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    report(quiet=False, steps=3, pause_s=0)
    report(quiet=True, steps=4, pause_s=PROGRESS_DELAY_S / 2)
    assert capfd.readouterr() == ("", "")

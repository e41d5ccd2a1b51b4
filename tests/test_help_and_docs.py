"""`--help`, docs/run.md and docs/nightly.md say the same: every option, every exit status."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from agriseg_cli.main import build_parser

from agriseg.segmentation.scale import Scale, format_gsd

DOCS = Path(__file__).resolve().parents[1] / "docs"


def command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{page} has no '## {heading}'"
    return match.group(1)


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        s for action in parser._actions for s in action.option_strings if s.startswith("--")
    } - {"--help"}


@pytest.mark.parametrize(("command", "page"), [("run", "run.md"), ("batch", "nightly.md")])
def test_docs_usage_lists_every_option(command: str, page: str) -> None:
    usage = section("run.md", "Usage")  # batch takes every run option too
    if command == "batch":
        usage += section(page, "One command for a folder")
    missing = sorted(
        o
        for o in options(command_parser(command))
        if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", usage)
    )
    assert not missing, f"docs/{page} does not list {missing}"


@pytest.mark.parametrize(
    ("command", "page", "statuses"),
    [("run", "run.md", (0, 2, 3, 130)), ("batch", "nightly.md", (0, 1, 2, 3, 130))],
)
def test_help_and_docs_give_every_exit_status(
    command: str, page: str, statuses: tuple[int, ...]
) -> None:
    parser = command_parser(command)
    help_text = " ".join(parser.format_help().split())
    docs = section(page, "Exit status")
    for status in statuses:
        assert re.search(rf"[:;] {status} \w", help_text), f"{command} --help lacks {status}"
        assert f"| {status} |" in docs, f"docs/{page} lacks exit status {status}"


def test_large_ground_sampling_distances_read_in_metres_or_kilometres() -> None:
    assert format_gsd(0.0292) == "2.9 cm"
    assert format_gsd(2.5) == "2.5 m"
    assert format_gsd(78008.627) == "78.0 km"
    warning = Scale(78008.627, 0.0292, 78008.627, False, True).warnings()[0]
    assert "(78.0 km)" in warning and "(2.9 cm)" in warning and "7800862" not in warning

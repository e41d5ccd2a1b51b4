"""Every command's --help: one meaning per option name, defaults shown."""

from __future__ import annotations

import argparse

import pytest
from agriseg_cli.main import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    """``{"run": parser, "labels init": parser, ...}`` for every (sub)command."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subs:
            for name, child in action.choices.items():
                walk(f"{prefix} {name}".strip(), child)
        if prefix and not subs:
            found[prefix] = parser

    walk("", build_parser())
    return found


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_every_default(name: str) -> None:
    parser = COMMANDS[name]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.required or action.nargs == 0 or isinstance(action, argparse._HelpAction):
            continue  # required, or a flag: nothing to default
        shown = parser.formatter_class(prog="x")._get_help_string(action) or ""
        assert "default" in shown.lower(), f"{name} {action.option_strings[0]}: no default"
        assert action.option_strings[0] in text


def test_one_meaning_per_option_name() -> None:
    """--batch-size is tiles per forward pass wherever it is offered; --out names a
    folder or a file, never a name prefix; --labels takes one value."""
    for name, parser in COMMANDS.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if "--batch-size" in action.option_strings:
                assert "tiles per forward pass" in action.help, name
            if "--out" in action.option_strings:
                assert "prefix" not in action.help and "(NAME)" not in action.help, name
            if "--labels" in action.option_strings:
                assert action.nargs is None, name


def test_train_batch_size_is_chips_per_step(run_cli, capsys) -> None:
    train = COMMANDS["train"]
    assert "--chips-per-step" in train.format_help()
    assert "--batch-size" not in train.format_help()  # run's --batch-size means tiles
    args = train.parse_args(["a.tif", "--labels", "l.gpkg", "--out", "m", "--batch-size", "3"])
    assert args.chips_per_step == 3
    assert "--batch-size is deprecated; use --chips-per-step" in capsys.readouterr().err


def test_labels_takes_one_value(capsys) -> None:
    train = COMMANDS["train"]
    args = train.parse_args(["--labels", "masks", "images", "--out", "m"])
    assert args.labels.name == "masks" and [p.name for p in args.images] == ["images"]

"""``agriseg`` entry point: dispatches to one module per command.

Each command module in this package defines ``add_parser(subparsers)`` and
``execute(args) -> int``. Library errors become one-line messages and exit status 2;
any other exception is a bug in agriseg (or in a library it uses) and becomes one
line saying so, with exit status 3; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agriseg_cli.common import EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED

from agriseg import __version__
from agriseg.errors import AgrisegError

#: Command modules, in the order ``agriseg --help`` lists them.
COMMANDS = (
    "run",
    "batch",
    "prescribe",
    "plants",
    "train",
    "evaluate",
    "models",
    "export",
    "bench",
    "generate",
)


#: Positional arguments that name a command's input, for the internal-error message.
INPUT_ARGS = ("input", "raster", "rasters", "survey_dir", "run_dir")


def _available_commands() -> list:
    modules = []
    for name in COMMANDS:
        try:
            modules.append(importlib.import_module(f"agriseg_cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"agriseg_cli.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agriseg",
        description="Maps of crop, weed, diseased crop and soil (or your own classes) "
        "from orthomosaics.",
    )
    parser.add_argument("--version", action="version", version=f"agriseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _available_commands():
        command = module.add_parser(sub)
        command.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
        command.set_defaults(execute=module.execute)
    return parser


def _input_of(args: argparse.Namespace) -> str | None:
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, list):
            return ", ".join(map(str, value)) if value else None
        if value is not None:
            return str(value)
    return None


def internal_error_message(command: str, exc: Exception, input_path: str | None) -> str:
    """One line for an exception agriseg did not expect: what it was, where, what to do."""
    what = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever GDAL said
    where = f" (input: {input_path})" if input_path else ""
    return (
        f"agriseg {command}: internal error: {what}{where} — "
        "rerun with --debug for the traceback and report it"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.execute(args))
    except AgrisegError as exc:
        if args.debug:
            raise
        print(f"agriseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line, not a traceback (the outputs are rolled back)
        if args.debug:
            raise
        print(internal_error_message(args.command, exc, _input_of(args)), file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print(f"agriseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""``agriseg`` entry point: dispatches to one module per command.

Each command module in this package defines ``add_parser(subparsers)`` and
``execute(args) -> int``. Library errors become one-line messages and a non-zero
exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agriseg import __version__
from agriseg.errors import AgrisegError

#: Command modules, in the order ``agriseg --help`` lists them.
COMMANDS = ("run", "batch", "train", "evaluate", "models", "bench", "generate")

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


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
        description="Maps of crop, weed, diseased crop and soil from orthomosaics.",
    )
    parser.add_argument("--version", action="version", version=f"agriseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _available_commands():
        command = module.add_parser(sub)
        command.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
        command.set_defaults(execute=module.execute)
    return parser


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
    except KeyboardInterrupt:
        print(f"agriseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""Start-up: the command line parses and answers --help and --version without the heavy
libraries, which each command imports only when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agriseg.config import ARCHITECTURE_NAMES
from agriseg.models.architectures import ARCHITECTURES

HEAVY = ("torch", "dask", "distributed", "geopandas", "rasterio", "segmentation_models_pytorch")

PROBE = """
import json, sys
from agriseg_cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["run", "--help"], ["train", "--help"]]
)
def test_help_and_version_import_no_heavy_library(argv: list[str]) -> None:
    code = PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_architecture_names_offered_by_the_parser_are_the_registry() -> None:
    assert tuple(sorted(ARCHITECTURES)) == ARCHITECTURE_NAMES

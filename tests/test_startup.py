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


def test_a_default_run_without_an_nvidia_driver_never_imports_torch(tmp_path) -> None:
    """``--device auto`` looks for an NVIDIA driver before importing PyTorch (~650 MB)."""
    from conftest import field_image, write_raster

    from agriseg.models.inference import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("an NVIDIA driver is installed: --device auto may use CUDA here")
    image = write_raster(tmp_path / "field.tif", field_image(96, 96))
    argv = ["run", str(image), "--out", str(tmp_path / "out"), "--quiet"]
    code = PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert "rasterio" in imported and "torch" not in imported
    assert (tmp_path / "out" / "field.classes.tif").is_file()

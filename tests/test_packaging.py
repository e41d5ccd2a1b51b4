"""The installed package exposes ``agriseg`` and ``agriseg_cli`` and no generic ``cli``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_no_top_level_cli_module_is_installed(tmp_path):
    # Run outside the repository so the working directory cannot provide ``cli``.
    code = (
        "import importlib.util as u;"
        "print(u.find_spec('cli') is None, u.find_spec('agriseg_cli') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]


def test_console_script_reports_version(tmp_path):
    exe = Path(sys.executable).with_name("agriseg")
    out = subprocess.run([exe, "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("agriseg ")


def test_every_subpackage_is_packaged() -> None:
    # A subpackage missing from pyproject's list installs in editable mode but not in a
    # plain ``pip install .`` (the torch-free install).
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "agriseg").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)

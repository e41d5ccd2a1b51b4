"""scripts/gpu: the wheels for the lent GPU machine, their parts, and the checks' dry run."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"
sys.path.insert(0, str(SCRIPTS))

import fetch_wheels  # noqa: E402
import parts  # noqa: E402


def make_wheel(folder: Path, name: str, requires: tuple[str, ...] = (), payload: int = 0) -> Path:
    """A real, installable pure-Python wheel: module ``name`` holding ``payload`` random bytes."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": f"DATA = {os.urandom(payload).hex()!r}\n".encode(),
        f"{dist}/METADATA": "\n".join(
            ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
            + [f"Requires-Dist: {r}" for r in requires]
        ).encode()
        + b"\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.mark.parametrize(("total", "limit"), [(1, 1), (10, 3), (100, 10), (101, 10), (7, 100)])
def test_part_sizes_are_the_fewest_parts_under_the_limit(total, limit):
    sizes = parts.part_sizes(total, limit)
    assert sum(sizes) == total
    assert max(sizes) <= limit
    assert len(sizes) == math.ceil(total / limit)
    assert max(sizes) - min(sizes) <= 1  # even, so every part has room to spare


def test_every_part_is_under_the_limit_and_they_join_back(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    wheels = [make_wheel(source, f"pkg{k}", payload=20_000) for k in range(3)]
    limit = 30_000
    manifest = parts.pack(wheels, tmp_path / "wheels", limit, {"python": "3.12"})
    folders = sorted((tmp_path / "wheels").glob("part*"))
    assert len(folders) == len(manifest["parts"]) == math.ceil(manifest["tar_bytes"] / limit)
    for folder in folders:
        (chunk,) = folder.glob("wheels.tar.*")
        assert chunk.stat().st_size <= limit
        assert json.loads((folder / parts.MANIFEST).read_text()) == manifest

    store = tmp_path / "store"
    for number in reversed(range(1, len(folders) + 1)):  # any order
        _, missing = parts.receive(tmp_path / "wheels" / f"part{number}", store)
    assert missing == []
    out = parts.unpack(store, manifest, tmp_path / "out")
    assert [p.read_bytes() for p in out] == [w.read_bytes() for w in wheels]


def test_a_damaged_part_is_refused(tmp_path):
    wheel = make_wheel(tmp_path, "pkg", payload=5_000)
    parts.pack([wheel], tmp_path / "wheels", 4_000, {})
    chunk = tmp_path / "wheels" / "part2" / "wheels.tar.2"
    chunk.write_bytes(b"x" + chunk.read_bytes()[1:])
    with pytest.raises(SystemExit, match="damaged"):
        parts.receive(tmp_path / "wheels" / "part2", tmp_path / "store")


def test_install_part_installs_the_wheels_once_every_part_is_there(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    wheels = [make_wheel(source, "gpu_probe_a", payload=12_000), make_wheel(source, "gpu_probe_b")]
    needs = [["a.whl", "packaging>=1"], ["a.whl", "pytest>=999"], ["b.whl", "gpu-ghost>=1"]]
    manifest = parts.pack(wheels, tmp_path / "wheels", 15_000, {"device_needs": needs})
    count = len(manifest["parts"])
    assert count >= 2
    site = tmp_path / "site"

    def install(number: int) -> str:
        command = [sys.executable, str(SCRIPTS / "install_part.py"), str(number)]
        command += ["--wheels", str(tmp_path / "wheels"), "--site", str(site)]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    for number in range(2, count + 1):
        output = install(number)
        assert "still to carry: 1" in output
        # The device's own packages are checked against what the wheels need, every call.
        pytest_version = importlib.metadata.version("pytest")
        assert f"a.whl needs pytest>=999: pytest {pytest_version} is here" in output
        assert "b.whl needs gpu-ghost>=1: not installed here" in output
        assert "packaging" not in output
    assert not (site / "lib").exists()
    assert "2 wheels installed" in install(1)
    assert "already installed" in install(1)  # idempotent
    code = "import gpu_probe_a, gpu_probe_b; print(len(gpu_probe_a.DATA) // 2)"
    probe = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site / "lib")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "12000"  # bytes, written as hex


def test_the_device_gets_the_gdal_and_dask_stacks_at_the_versions_tested_here():
    pins = fetch_wheels.missing_on_device(fetch_wheels.top_level_requirements())
    carried = {
        "rasterio", "pyogrio", "pyproj", "shapely", "geopandas", "dask", "distributed",
        "segmentation-models-pytorch", "isoxml", "rio-cogeo",
    }  # fmt: skip
    assert carried <= set(pins)
    on_device = {"torch", "torchvision", "timm", "numpy", "pandas", "scipy", "pillow", "tqdm"}
    assert not on_device & set(pins)
    assert not {"ruff", "mypy"} & set(pins)  # linters: the device only runs tests
    # dev's agriseg[torch,crf] is expanded, not downloaded (agriseg comes from the tree),
    # and the crf extra stays behind: pydensecrf2 has no cp312 wheel.
    assert not {"agriseg", "pydensecrf2"} & set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version
    # --carry: a package the device has, but too old, travels too.
    carry = fetch_wheels.CARRY_ANYWAY | {"pandas"}
    with_pandas = fetch_wheels.missing_on_device(fetch_wheels.top_level_requirements(), carry)
    assert with_pandas == {**pins, "pandas": importlib.metadata.version("pandas")}


def test_unmet_requirements_names_what_neither_a_wheel_nor_the_device_has(tmp_path):
    wheels = [
        make_wheel(
            tmp_path,
            "needy",
            requires=("numpy>=1.24", "helper", "ghost>=1", "tomli; python_version < '3.11'"),
        ),
        make_wheel(tmp_path, "helper"),
    ]
    assert fetch_wheels.unmet_requirements(wheels) == ["needy-1.0-py3-none-any.whl needs ghost>=1"]


def run_checks(tmp_path: Path, *options: str) -> dict:
    command = [sys.executable, str(SCRIPTS / "run_checks.py"), "--dry-run"]
    command += ["--out", str(tmp_path / "out"), "--site", str(tmp_path / "site")]
    command += ["--work", str(tmp_path / "work"), *options]
    command += ["--bench-args", "--tile-size 128 --overlap 32 --no-preview"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "dry-run on no GPU" in done.stdout
    return json.loads((tmp_path / "out" / "summary.json").read_text())


def test_run_checks_dry_run_writes_the_figures_a_gpu_run_writes(tmp_path):
    summary = run_checks(tmp_path, "--size", "128", "--skip-pytest")
    assert summary["mode"] == "dry-run"
    assert [s["name"] for s in summary["steps"]] == ["environment", "bench 128"]
    assert all(s["rc"] == 0 for s in summary["steps"])
    env = summary["environment"]
    assert env["cuda_available"] is False
    assert env["packages"]["rasterio"] == importlib.metadata.version("rasterio")
    figures = summary["bench"]["128"]["figures"]
    assert figures["pixels"] == 128 * 128 and figures["device"] == "cpu"
    assert figures["peak_gpu_mb"] is None  # measured on CUDA only
    assert {"end_to_end_s", "model_only_s", "mpx_per_s", "peak_rss_mb", "stages_s"} <= set(figures)
    assert {"read", "infer", "stitch", "write"} <= set(figures["stages_s"])
    assert (tmp_path / "out" / "bench-128.log").read_text().count("[exit 0,") == 1


def test_a_step_past_the_budget_is_stopped_and_recorded(tmp_path):
    summary = run_checks(tmp_path, "--size", "128", "--skip-pytest", "--budget", "20")
    assert summary["steps"][-1]["timed_out"] is True
    assert summary["bench"]["128"]["rc"] == 124
    assert "timed out" in (tmp_path / "out" / "bench-128.log").read_text()


@pytest.mark.slow
def test_run_checks_dry_run_with_the_gpu_tests_and_a_batch_sweep(tmp_path):
    summary = run_checks(tmp_path, "--size", "128", "--sweep", "2", "--sweep-size", "160")
    # Without CUDA the gpu tests are collected (every test module imports) and skipped.
    assert summary["pytest"]["rc"] == 0
    assert summary["pytest"]["skipped"] >= 1 and "failed" not in summary["pytest"]
    sweep = summary["sweep"]["batch_2"]["figures"]
    assert (sweep["pixels"], sweep["batch_size"]) == (160 * 160, 2)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {
        "summary.json",
        "environment.txt",
        "pytest-gpu.txt",
        "bench-128.log",
        "sweep.log",
    }

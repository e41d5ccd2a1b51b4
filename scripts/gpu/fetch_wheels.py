"""Download the wheels agriseg needs on the lent GPU machine, split into carry-sized parts.

The device tool's machines run Python 3.12 (x86-64 Linux) with torch, torchvision,
timm, scipy, pillow, onnxruntime and many more packages, but no GDAL stack, no Dask
and no network: whatever else agriseg and its tests import travels as wheels in the
working tree, at most 64 MiB a call, the tracked files included. This script

1. walks agriseg's requirements (``pyproject.toml``: the run dependencies and the
   ``dev`` extras the tests import) through the metadata of the packages installed
   here, evaluated for Python 3.12 on Linux, stopping at packages the device already
   has (:data:`DEVICE_PACKAGES`);
2. downloads each missing one, pinned to the version tested here, as a cp312
   manylinux x86-64 (or pure-Python) wheel, into ``.gpu-wheels/`` (ignored by git);
3. checks every wheel's own requirements are met by another wheel or by the device;
4. packs them into ``.gpu-wheels/partN`` folders, each small enough to travel in one
   device call beside the working tree (see ``parts.py``).

Run here, from the checkout the session was started in (its tree is what travels):
``.venv/bin/python scripts/gpu/fetch_wheels.py``; then ``install_part.py N`` on the
device for each part, then ``run_checks.py`` (see docs/gpu.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parts import pack  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".gpu-wheels"
MIB = 1024 * 1024

#: What one device call may carry: the working tree plus the carried paths.
CALL_LIMIT = 64 * MIB
#: Kept free below the call limit, for files committed between fetching and running.
MARGIN = 3 * MIB

#: Python packages installed on the device kinds nvidia-h100-x1 and nvidia-h200 (the
#: image 'cuda', as /work/.library/device/KINDS.md listed them on 2026-11-17).
DEVICE_PACKAGES = frozenset(
    """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
    narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
    onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
    pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
    statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
    torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
    typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
    """.split()  # noqa: SIM905 (a list the KINDS.md page can be pasted into)
)

#: On the device, but carried anyway: pydantic (for rio-cogeo) needs a newer one than
#: the device may have, and it is small and backward compatible.
CARRY_ANYWAY = frozenset({"typing-extensions"})

#: dev extras the device needs no copy of: linters, not imported by the tests.
NOT_FOR_TESTS = frozenset({"ruff", "mypy"})

#: agriseg extras the ``dev`` extra names (``agriseg[torch,crf]``) that stay behind:
#: pydensecrf2 has no cp312 wheel (it is built from source here) and ``pytest -m gpu``
#: does not use it.
EXTRAS_NOT_CARRIED = frozenset({"crf"})

#: The device's interpreter, for environment markers (python_version < "3.12"...).
TARGET_ENV = {
    **default_environment(),
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}

#: pip matches manylinux tags exactly: list every glibc the device's (2.39) can run.
PLATFORMS = ["manylinux2014_x86_64", "manylinux1_x86_64"] + [
    f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)
]


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """agriseg's run dependencies and the dev extras its tests import."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    wanted = []
    for requirement in map(Requirement, project["dependencies"] + optional.get("dev", [])):
        if canonical(requirement.name) == canonical(project["name"]):  # agriseg[torch,crf]
            for extra in sorted(requirement.extras - EXTRAS_NOT_CARRIED):
                wanted += map(Requirement, optional[extra])
        else:
            wanted.append(requirement)
    return [r for r in wanted if canonical(r.name) not in NOT_FOR_TESTS]


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**TARGET_ENV, "extra": extra}) for extra in ("", *extras)
    )


def missing_on_device(
    top: Iterable[Requirement], carry: Iterable[str] = CARRY_ANYWAY
) -> dict[str, str]:
    """``{name: version}`` of every distribution the device lacks, versions as installed here.

    Walks the requirements through this environment's installed metadata, with the
    device's markers, and stops at :data:`DEVICE_PACKAGES` (their own needs are the
    device's business) unless ``carry`` names them.
    """
    carry = {canonical(name) for name in carry}
    pins: dict[str, str] = {}
    queue: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in top]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, parent_extras = queue.pop()
        if not _applies(requirement, parent_extras):
            continue
        name = canonical(requirement.name)
        extras = frozenset(requirement.extras)
        if name in DEVICE_PACKAGES and name not in carry:
            continue
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"{name} is needed on the device but not installed here; install agriseg's "
                "dev environment first (make install)"
            ) from None
        pins[name] = dist.version
        queue.extend((Requirement(r), extras) for r in dist.requires or [])
    return dict(sorted(pins.items()))


def download(pins: dict[str, str], dest: Path) -> None:
    """pip-download ``name==version`` wheels for CPython 3.12 on manylinux x86-64."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
        *platforms, "--dest", str(dest), *(f"{n}=={v}" for n, v in pins.items()),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def wheel_name(path: Path) -> str:
    """The canonical project name in a wheel's file name."""
    return canonical(path.name.split("-")[0])


def wheel_requirements(wheels: Iterable[Path]) -> list[tuple[str, Requirement]]:
    """``(wheel file name, requirement)`` for each requirement in the wheels' own
    METADATA that applies on the device. Extras of a carried package are followed
    from its requirer, so only each wheel's base requirements count."""
    found = []
    for path in wheels:
        with zipfile.ZipFile(path) as archive:
            meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = archive.read(meta_name).decode()
        for line in metadata.splitlines():
            if line.startswith("Requires-Dist:"):
                requirement = Requirement(line.split(":", 1)[1].strip())
                marker = requirement.marker
                if marker is None or marker.evaluate({**TARGET_ENV, "extra": ""}):
                    found.append((path.name, requirement))
    return found


def unmet_requirements(wheels: Iterable[Path]) -> list[str]:
    """Requirements of the wheels that neither another wheel nor the device provides;
    empty when the set is complete."""
    paths = list(wheels)
    carried = {wheel_name(p) for p in paths}
    return [
        f"{wheel} needs {requirement}"
        for wheel, requirement in wheel_requirements(paths)
        if canonical(requirement.name) not in carried | DEVICE_PACKAGES
    ]


def device_needs(wheels: Iterable[Path]) -> list[list[str]]:
    """``[wheel, requirement]`` the device's own packages must meet (``pandas>=2.2.0``
    for geopandas...): ``install_part.py`` checks them there, in the first call."""
    paths = list(wheels)
    carried = {wheel_name(p) for p in paths}
    return [
        [wheel, str(requirement)]
        for wheel, requirement in wheel_requirements(paths)
        if canonical(requirement.name) in DEVICE_PACKAGES - carried
    ]


def travelling_tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call sends without carry: tracked files plus untracked
    files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    return sum((repo / name).stat().st_size for name in listed if name and (repo / name).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=WHEELS, help="default: .gpu-wheels")
    parser.add_argument(
        "--part-mib", type=float, default=None,
        help="largest part in MiB (default: 64 MiB - the travelling tree - 3 MiB)",
    )  # fmt: skip
    parser.add_argument(
        "--carry", action="append", default=[], metavar="NAME",
        help="carry this package (and what it needs) although the device has it, e.g. "
        "when install_part.py reports the device's version too old",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print what the device lacks and stop")
    args = parser.parse_args(argv)

    top = top_level_requirements()
    pins = missing_on_device(top, CARRY_ANYWAY | set(args.carry))
    if args.list:
        print("\n".join(f"{n}=={v}" for n, v in pins.items()))
        return 0
    pool = args.dest / "all"  # the wheels, kept: pip skips those already here
    for folder in args.dest.glob("part*"):  # a fresh split each time
        shutil.rmtree(folder)
    download(pins, pool)
    for path in pool.glob("*.whl"):  # exactly one wheel per pin: two would stop the install
        name = wheel_name(path)
        if name not in pins or f"-{pins[name]}-" not in path.name:
            path.unlink()
    wheels = {wheel_name(p): p for p in pool.glob("*.whl")}
    if set(wheels) != set(pins):
        raise SystemExit(f"no wheel downloaded for {sorted(set(pins) - set(wheels))}")
    unmet = unmet_requirements(wheels.values())
    if unmet:
        raise SystemExit("wheels incomplete:\n" + "\n".join(unmet))

    tree = travelling_tree_bytes()
    limit = int(args.part_mib * MIB) if args.part_mib else CALL_LIMIT - tree - MARGIN
    info = {
        "python": "3.12",
        "tree_bytes": tree,
        "pins": pins,
        "device_needs": device_needs(wheels.values())
        + [
            ["agriseg", str(r)]
            for r in top
            if canonical(r.name) in DEVICE_PACKAGES and canonical(r.name) not in pins
        ],
    }
    manifest = pack(wheels.values(), args.dest, limit, info)
    print(
        f"{len(pins)} wheels, {manifest['wheel_bytes'] / MIB:.1f} MiB; the travelling tree is "
        f"{tree / MIB:.1f} MiB, so parts of at most {limit / MIB:.1f} MiB:"
    )
    for part in manifest["parts"]:
        print(f"  .gpu-wheels/part{part['part']}: {part['bytes'] / MIB:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

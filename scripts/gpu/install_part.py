"""On the device: keep part N of the wheels; once all parts are there, install them.

``python3 scripts/gpu/install_part.py N`` checks ``.gpu-wheels/partN`` against its
manifest and keeps it in ``.gpu-site/parts`` (ignored, so it stays on the warm
machine between calls). When every part is kept it joins them and runs
``pip install --no-index --no-deps --target .gpu-site/lib`` on the wheels; the
device's own torch, numpy, pandas... are used as they are. Running it again is
harmless: an installed set of wheels is not installed twice.

Standard library only, for the device's bare Python 3.12.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parts import receive, unpack  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def device_conflicts(manifest: dict) -> list[str]:
    """The wheels' needs (``manifest["device_needs"]``) that this machine's own packages
    do not meet; a fix is ``fetch_wheels.py --carry NAME`` here, then the parts again."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return ["packaging is not installed: the device's versions were not checked"]
    conflicts = []
    for wheel, text in manifest.get("device_needs", []):
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            conflicts.append(f"{wheel} needs {text}: not installed here")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            conflicts.append(f"{wheel} needs {text}: {requirement.name} {version} is here")
    return conflicts


def install(number: int, wheels: Path, site: Path) -> str:
    """Receive part ``number`` from ``wheels/partN``; install all when complete.
    Returns a one-line status."""
    part_dir = wheels / f"part{number}"
    if not part_dir.is_dir():
        raise SystemExit(f"{part_dir} is missing: carry .gpu-wheels/part{number} in this call")
    manifest, missing = receive(part_dir, site / "parts")
    count = len(manifest["parts"])
    conflicts = device_conflicts(manifest)
    checked = len(manifest.get("device_needs", []))
    print("\n".join(conflicts) or f"the device's packages meet the wheels' {checked} needs")
    if missing:
        return f"part {number} of {count} kept; still to carry: {', '.join(map(str, missing))}"
    lib = site / "lib"
    marker = lib / ".installed"
    if marker.exists() and marker.read_text().strip() == manifest["tar_sha256"]:
        return f"all {count} parts kept; {len(manifest['wheels'])} wheels already installed"
    if lib.exists():
        shutil.rmtree(lib)
    unpacked = unpack(site / "parts", manifest, site / "wheels")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
            "--no-compile", "--no-cache-dir", "--disable-pip-version-check",
            "--target", str(lib), *map(str, unpacked),
        ],
        check=True,
    )  # fmt: skip
    shutil.rmtree(site / "wheels")
    marker.write_text(manifest["tar_sha256"] + "\n")
    return f"all {count} parts kept; {len(unpacked)} wheels installed into {lib}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", type=int, help="the part carried in this call (1, 2...)")
    parser.add_argument("--wheels", type=Path, default=REPO / ".gpu-wheels")
    parser.add_argument("--site", type=Path, default=REPO / ".gpu-site")
    args = parser.parse_args(argv)
    print(install(args.part, args.wheels, args.site))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wheels cut into parts that each fit one device call, and put back together there.

A device call carries at most 64 MiB, the working tree included (~32 MiB with the
shipped weights), and rasterio's wheel alone is 34 MiB: wheels cannot travel whole,
one part each. So the wheels are packed into one uncompressed tar (they are zip
archives already) and the tar is cut into byte ranges of at most the room a call
leaves. ``manifest.json`` beside every part names the parts and their SHA-256, so the
device can check each part on arrival and unpack once all are there.

Standard library only: this module runs on the device's bare Python 3.12.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Iterable
from pathlib import Path

MANIFEST = "manifest.json"
CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def part_sizes(total: int, limit: int) -> list[int]:
    """Bytes of each part when ``total`` bytes are cut into the fewest parts of at most
    ``limit`` bytes, as even as possible (so a part has room to spare if the tree grows)."""
    if limit <= 0:
        raise ValueError(f"no room for wheels in a call: part limit {limit} bytes")
    count = max(1, math.ceil(total / limit))
    base, extra = divmod(total, count)
    return [base + (1 if k < extra else 0) for k in range(count)]


def pack(wheels: Iterable[Path], dest: Path, limit: int, info: dict[str, object]) -> dict:
    """Tar ``wheels`` and cut the tar into ``dest/partN/wheels.tar.N`` of at most
    ``limit`` bytes, each with the same ``manifest.json`` (``info`` merged in).
    Returns the manifest."""
    paths = sorted(wheels, key=lambda p: p.name)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "wheels.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            tar.add(path, arcname=path.name)
    sizes = part_sizes(archive.stat().st_size, limit)
    parts = []
    with archive.open("rb") as f:
        for number, size in enumerate(sizes, start=1):
            folder = dest / f"part{number}"
            folder.mkdir()
            target = folder / f"wheels.tar.{number}"
            target.write_bytes(f.read(size))
            entry = {"part": number, "file": target.name, "bytes": size}
            parts.append({**entry, "sha256": sha256(target)})
    manifest = {
        **info,
        "wheels": [p.name for p in paths],
        "wheel_bytes": sum(p.stat().st_size for p in paths),
        "tar_bytes": archive.stat().st_size,
        "tar_sha256": sha256(archive),
        "part_limit_bytes": limit,
        "parts": parts,
    }
    archive.unlink()
    text = json.dumps(manifest, indent=1) + "\n"
    for number in range(1, len(sizes) + 1):
        (dest / f"part{number}" / MANIFEST).write_text(text)
    return manifest


def receive(part_dir: Path, store: Path) -> tuple[dict, list[int]]:
    """Check the part in ``part_dir`` against its manifest and keep it in ``store``.

    Returns the manifest and the part numbers still missing from ``store``. Parts
    of an older manifest (another set of wheels) are dropped from ``store``.
    """
    manifest = json.loads((part_dir / MANIFEST).read_text())
    store.mkdir(parents=True, exist_ok=True)
    kept = store / MANIFEST
    if kept.exists() and json.loads(kept.read_text())["tar_sha256"] != manifest["tar_sha256"]:
        for old in store.glob("wheels.tar.*"):
            old.unlink()
    kept.write_text(json.dumps(manifest, indent=1) + "\n")
    for entry in manifest["parts"]:
        source = part_dir / entry["file"]
        if source.exists():
            if sha256(source) != entry["sha256"]:
                raise SystemExit(f"{source}: damaged (SHA-256 differs from {MANIFEST})")
            (store / entry["file"]).write_bytes(source.read_bytes())
    missing = [
        e["part"]
        for e in manifest["parts"]
        if not (store / e["file"]).exists() or sha256(store / e["file"]) != e["sha256"]
    ]
    return manifest, missing


def unpack(store: Path, manifest: dict, wheel_dir: Path) -> list[Path]:
    """Join the parts kept in ``store`` and extract the wheels into ``wheel_dir``."""
    archive = store / "wheels.tar"
    with archive.open("wb") as out:
        for entry in manifest["parts"]:
            out.write((store / entry["file"]).read_bytes())
    if sha256(archive) != manifest["tar_sha256"]:
        raise SystemExit(f"{archive}: joined parts differ from {MANIFEST}")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(wheel_dir, filter="data")
    archive.unlink()
    return [wheel_dir / name for name in manifest["wheels"]]

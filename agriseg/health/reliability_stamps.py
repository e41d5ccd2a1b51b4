"""The run's reliability verdict stamped onto the products a user opens first.

The verdict is known only once the last block is segmented, after the preview's
first strips were written (it is streamed top to bottom, see
:mod:`agriseg.health.preview`); so the finished preview (at most 2048 px a side, a few
MB) gets a banner *added above it*: nothing of the map is covered and the legend
keeps its place. The GeoPackage gets a ``reliability`` table (one row per check:
level, reason, measured values) and every layer's description starts with the
verdict, which QGIS and ``ogrinfo`` show with the layer.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
from PIL import Image, ImageDraw, ImageFont

from agriseg.health.preview import PngWriter
from agriseg.health.verdict import Reliability, Verdict
from agriseg.io.ownership import OUTPUT_SUFFIXES

#: Banner colours: green, amber, red.
BANNER_COLOURS: dict[Verdict, tuple[int, int, int]] = {
    "ok": (26, 127, 55),
    "doubtful": (191, 135, 0),
    "unreliable": (207, 34, 46),
}

#: Name of the GeoPackage table holding the checks.
TABLE = "reliability"


def banner(width: int, reliability: Reliability) -> Image.Image:
    """A full-width banner with the verdict and its reasons, wrapped to ``width``."""
    size = max(12, min(40, width // 40))
    font = ImageFont.load_default(size=size)
    chars = max(20, int(width / (0.55 * size)))
    text = reliability.headline()
    lines = textwrap.wrap(text, chars)[:6] or [text]
    pad = size // 2
    height = pad * 2 + len(lines) * (size + pad // 2)
    image = Image.new("RGB", (width, height), BANNER_COLOURS[reliability.verdict])
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * (size + pad // 2)), line, fill=(255, 255, 255), font=font)
    return image


def stamp_preview(path: Path, reliability: Reliability) -> None:
    """Put the verdict's banner above the preview PNG at ``path`` (rewritten in place:
    it is a staged file of the run's transaction)."""
    with Image.open(path) as opened:
        width = opened.width
    PngWriter.rows_above(path, np.asarray(banner(width, reliability).convert("RGB")))


def stamp_geopackage(path: Path, reliability: Reliability, override: str | None = None) -> None:
    """Add the ``reliability`` table to the GeoPackage at ``path`` and lead every
    layer's description with the verdict (and ``override``: why a product was made
    from it anyway)."""
    rows = [
        {
            "check": c.name,
            "level": c.level,
            "reason": c.reason or "",
            "values": json.dumps(c.values, default=str),
        }
        for c in reliability.checks
    ]
    rows.insert(
        0,
        {
            "check": "verdict",
            "level": reliability.verdict,
            "reason": "; ".join(reliability.reasons),
            "values": "",
        },
    )
    headline = f"reliability: {reliability.headline()}"
    if override:
        rows.append({"check": "override", "level": "", "reason": override, "values": ""})
        headline += f"; OVERRIDE: {override}"
    db = sqlite3.connect(path)
    try:
        layers = [r[0] for r in db.execute("SELECT table_name FROM gpkg_contents")]
    finally:
        db.close()
    pyogrio.write_dataframe(pd.DataFrame(rows), path, layer=TABLE, driver="GPKG")
    db = sqlite3.connect(path)
    try:
        with db:
            for layer in [*layers, TABLE]:
                db.execute(
                    "UPDATE gpkg_contents SET description = ? WHERE table_name = ?",
                    (headline, layer),
                )
    finally:
        db.close()


def stamp_products(folder: Path, stem: str, reliability: Reliability) -> None:
    """Stamp the verdict onto the preview and GeoPackage of ``stem`` in ``folder``,
    where the run wrote them."""
    preview = folder / f"{stem}{OUTPUT_SUFFIXES['preview']}"
    if preview.is_file():
        stamp_preview(preview, reliability)
    gpkg = folder / f"{stem}{OUTPUT_SUFFIXES['gpkg']}"
    if gpkg.is_file():
        stamp_geopackage(gpkg, reliability)

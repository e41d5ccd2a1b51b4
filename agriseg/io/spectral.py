"""Names of spectral bands: one registry of canonical names and their aliases.

A file band's name comes from its description when that is a known name or alias
(``"NIR"``, ``"Red Edge"``), else from its colour interpretation (GDAL 3.10 knows
red, green, blue, pan, coastal, rededge and nir), else from its description as
written (normalised), else it has none and is called ``bandN``. Models record the
names of the bands they take, and :func:`match_bands` maps a file's bands to them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp

from agriseg.errors import InputError

#: Canonical band names and their aliases (compared lower case, ignoring spaces,
#: hyphens and underscores, so ``"Red-Edge"`` and ``"red edge"`` are one alias).
BAND_ALIASES: Mapping[str, tuple[str, ...]] = {
    "coastal": ("coastal aerosol", "ca", "aerosol"),
    "blue": ("b",),
    "green": ("g",),
    "red": ("r",),
    "red_edge": ("re", "red edge 1", "rededge1", "vre"),
    "nir": ("near infrared", "near ir", "nir1", "infrared", "ir"),
    "swir1": ("swir 1", "shortwave infrared 1"),
    "swir2": ("swir 2", "shortwave infrared 2"),
    "pan": ("panchromatic",),
}

#: Colour interpretations that name a band. GDAL's ``swir`` is left out: it does
#: not say which of swir1 and swir2 a band is.
_NAME_OF_INTERP = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.pan: "pan",
    ColorInterp.coastal: "coastal",
    ColorInterp.rededge: "red_edge",
    ColorInterp.nir: "nir",
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_CANONICAL = {
    _key(alias): name for name, aliases in BAND_ALIASES.items() for alias in (name, *aliases)
}


def canonical_band(text: str) -> str:
    """``text``'s canonical band name (``"NIR"`` → ``"nir"``), else ``text`` normalised.

    Normalised means lower case with runs of other characters as one ``_``
    (``"Thermal IR"`` → ``"thermal_ir"``).
    """
    known = _CANONICAL.get(_key(text))
    if known is not None:
        return known
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def is_known(name: str) -> bool:
    """Whether ``name`` is a canonical band name or an alias of one."""
    return _key(name) in _CANONICAL


def _file_names(src: rasterio.DatasetReader) -> list[str | None]:
    # One name per band, None where the file says nothing about a band.
    names: list[str | None] = []
    for description, interp in zip(src.descriptions, src.colorinterp, strict=True):
        text = (description or "").strip()
        if text and is_known(text):
            names.append(canonical_band(text))
        elif interp in _NAME_OF_INTERP:
            names.append(_NAME_OF_INTERP[interp])
        else:
            names.append(canonical_band(text) or None)
    return names


def band_names(src: rasterio.DatasetReader | Path | str) -> tuple[str, ...]:
    """The name of each band of a file, in band order (``bandN`` where it has none)."""
    if not isinstance(src, rasterio.DatasetReader):
        with rasterio.open(src) as opened:
            return band_names(opened)
    return tuple(n or f"band{i}" for i, n in enumerate(_file_names(src), start=1))


def find_bands(src: rasterio.DatasetReader | Path | str, names: Sequence[str]) -> dict[str, int]:
    """1-based index of each of ``names`` (aliases allowed) the file has; absent ones left out.

    Keys are the names as given. A band named by its description wins over one
    named by its colour interpretation alone.
    """
    if not isinstance(src, rasterio.DatasetReader):
        with rasterio.open(src) as opened:
            return find_bands(opened, names)
    by_description = [canonical_band(d) if d and is_known(d) else None for d in src.descriptions]
    file_names = _file_names(src)
    found: dict[str, int] = {}
    for name in names:
        wanted = canonical_band(name)
        for candidates in (by_description, file_names):
            if wanted in candidates:
                found[name] = candidates.index(wanted) + 1
                break
    return found


def data_bands(src: rasterio.DatasetReader) -> list[int]:
    """1-based indexes of the bands that are not alpha."""
    return [i + 1 for i, ci in enumerate(src.colorinterp) if ci != ColorInterp.alpha]


def _clash(wanted: str, name: str | None) -> bool:
    # Both known band names, and different ones.
    if name is None or not (is_known(wanted) and is_known(name)):
        return False
    return canonical_band(wanted) != name


def match_bands(src: rasterio.DatasetReader, wanted: Sequence[str]) -> tuple[int, ...]:
    """1-based bands of ``src`` feeding a model that takes ``wanted``, in the model's order.

    Bands are matched by name. When some are not found, the first non-alpha bands
    are used in order, unless a band there has a known name that differs from the
    model's (a file that says its first band is blue never feeds a model's red) or a
    band the model needs sits elsewhere.
    """
    path = src.name
    found = find_bands(src, wanted)
    if len(found) == len(wanted):
        return tuple(found[n] for n in wanted)
    names = _file_names(src)
    data = data_bands(src)
    listed = ", ".join(band_names(src)[b - 1] for b in data)
    if len(data) < len(wanted) and not found:
        raise InputError(
            f"{path}: has {len(data)} data band(s) but the model needs {len(wanted)} "
            f"({', '.join(wanted)}); use a {len(wanted)}-band image or another --model"
        )
    positional = data[: len(wanted)]
    # A band found by name elsewhere also rules out feeding the model another one.
    clash = any(
        _clash(w, names[b - 1]) or found.get(w, b) != b
        for w, b in zip(wanted, positional, strict=False)
    )
    if len(positional) == len(wanted) and not clash:
        return tuple(positional)
    missing = [w for w in wanted if w not in found]
    raise InputError(
        f"{path}: the model needs bands {', '.join(wanted)} but the file has {listed} "
        f"(no {', '.join(missing)}); name the file's bands (band descriptions) or pass "
        "--bands with its band numbers in the model's order"
    )


def new_model_bands(
    path: Path, bands: tuple[int, ...] | None, names: Sequence[str] | None
) -> tuple[str, ...]:
    """Names of a new model's input bands, read from the first training raster.

    Args:
        path: The first training raster.
        bands: 1-based bands to train on; ``None``: every non-alpha band.
        names: Names given for those bands (``--band-names``), overriding the file's.
    """
    with rasterio.open(path) as src:
        chosen = bands or tuple(data_bands(src))
        if names is not None:
            if len(names) != len(chosen):
                what = "--bands selects" if bands else "the file has"
                raise InputError(
                    f"{path}: --band-names gives {len(names)} name(s) ({', '.join(names)}) "
                    f"but {what} {len(chosen)} band(s); give one name per band"
                )
            given = tuple(canonical_band(n) for n in names)
            if "" in given or len(set(given)) != len(given):
                raise InputError(
                    f"--band-names {','.join(names)}: names must be distinct and not empty"
                )
            return given
        file_names = band_names(src)
        picked = [file_names[b - 1] for b in chosen if 1 <= b <= src.count]
    if len(set(picked)) != len(picked):
        return tuple(f"band{b}" for b in chosen)
    return tuple(picked)

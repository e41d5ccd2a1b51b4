"""Labelled image sets: finding image/mask pairs and decoding colour-coded masks.

Training and evaluation data often come as plain photos (PNG, JPEG, TIFF without
georeferencing) with one mask per image, e.g. ``images/001_image.png`` +
``annotations/001_annotation.png``. Files are given as explicit lists, folders or
glob patterns. Explicit file lists pair in order (one mask per image, as given);
folders and patterns pair by *key*: the file stem, lower-cased, without a trailing
``_image``, ``_img``, ``_rgb``, ``_annotation``, ``_mask``, ``_label(s)`` or ``_gt``.

A mask holds class ids (palette or greyscale PNG; ``255`` unlabelled) or colours
(RGB), decoded by a ``--label-colors`` table naming the class of each colour.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from agriseg.classes import NODATA, ClassList, Colour, parse_colour
from agriseg.errors import InputError

#: File suffixes found in folders (images and masks alike).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Stem endings dropped to pair an image with its mask (``_`` ``-`` ``.`` separated).
PAIR_SUFFIXES = (
    "image",
    "img",
    "rgb",
    "annotation",
    "annotations",
    "mask",
    "masks",
    "label",
    "labels",
    "gt",
)

_SUFFIX_RE = re.compile(r"[_\-.](?:" + "|".join(PAIR_SUFFIXES) + r")$")

#: A label-colour table: class name → RGB colour.
LabelColors = Mapping[str, Colour]


def pair_key(path: Path) -> str:
    """The name an image and its mask share: ``001_image.png``, ``001_annotation.png`` → ``001``."""
    stem = path.stem.lower()
    while True:
        shorter = _SUFFIX_RE.sub("", stem)
        if shorter == stem or not shorter:
            return stem
        stem = shorter


def expand(specs: Sequence[Path | str], what: str) -> tuple[list[Path], bool]:
    """Files named by ``specs`` (files, folders, glob patterns), and whether all were files.

    Folders give their image files (:data:`IMAGE_SUFFIXES`), sorted; patterns their
    matches, sorted. ``what`` names the option in messages (``images``, ``--labels``).
    """
    files: list[Path] = []
    explicit = True
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            explicit = False
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise InputError(
                    f"{path}: folder given as {what} holds no image ({', '.join(IMAGE_SUFFIXES)})"
                )
            files += found
        elif glob.has_magic(str(spec)):
            explicit = False
            found = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
            if not found:
                raise InputError(f"{spec}: pattern given as {what} matches no file")
            files += found
        else:
            files.append(path)
    return files, explicit


def pair_files(
    images: Sequence[Path | str], labels: Sequence[Path | str]
) -> list[tuple[Path, Path]]:
    """``(image, labels)`` pairs from files, folders or glob patterns of each.

    Lists of files pair in order and must have the same length; as soon as a folder or
    pattern is involved, files pair by :func:`pair_key` and every file needs a partner.
    """
    image_files, explicit_images = expand(images, "images")
    label_files, explicit_labels = expand(labels, "--labels")
    if explicit_images and explicit_labels:
        if len(image_files) != len(label_files):
            raise InputError(
                f"--labels gives {len(label_files)} file(s) for {len(image_files)} image(s); "
                "give one label file per image, in the same order (or folders to pair by name)"
            )
        return list(zip(image_files, label_files, strict=True))
    by_image = _by_key(image_files, "images")
    by_label = _by_key(label_files, "--labels")
    lonely = [str(by_image[k]) for k in by_image if k not in by_label]
    lonely += [str(by_label[k]) for k in by_label if k not in by_image]
    if lonely:
        shown = ", ".join(sorted(lonely)[:5]) + (" ..." if len(lonely) > 5 else "")
        raise InputError(
            f"{len(lonely)} file(s) without a partner: {shown}; an image and its mask pair "
            f"by name without a suffix such as _{', _'.join(PAIR_SUFFIXES[:7])} "
            "(001_image.png + 001_annotation.png); rename them or give file lists in order"
        )
    return [(by_image[k], by_label[k]) for k in sorted(by_image)]


def _by_key(files: Sequence[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        key = pair_key(path)
        if key in out:
            raise InputError(
                f"{what}: {out[key]} and {path} both pair as {key!r}; keep one of them"
            )
        out[key] = path
    return out


def parse_label_colors(text: str) -> dict[str, Colour]:
    """``crop=#00ff00,weed=#ff0000,soil=#000000`` (or ``name=r;g;b``) as name → colour."""
    colors: dict[str, Colour] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise InputError(
                f"--label-colors {part!r}: expected name=#rrggbb, "
                "e.g. 'crop=#00ff00,weed=#ff0000,soil=#000000'"
            )
        try:
            colors[name.strip()] = parse_colour(value.replace(";", ","))
        except InputError:
            raise InputError(
                f"--label-colors {part!r}: colour {value!r} is not #rrggbb or r;g;b, "
                "e.g. 'crop=#00ff00,weed=#ff0000,soil=#000000'"
            ) from None
    if not colors:
        raise InputError(f"--label-colors {text!r}: give e.g. 'crop=#00ff00,soil=#000000'")
    seen: dict[Colour, str] = {}
    for name, colour in colors.items():
        if colour in seen:
            raise InputError(
                f"--label-colors: {seen[colour]} and {name} have the same colour; "
                "each class needs its own"
            )
        seen[colour] = name
    return colors


def color_ids(colors: LabelColors, classes: ClassList) -> dict[Colour, int]:
    """Colour → id in ``classes`` of each entry of a label-colour table.

    Raises:
        InputError: A colour names a class that ``classes`` lacks.
    """
    table = {}
    for name, colour in colors.items():
        try:
            table[colour] = classes.by_name(name).id
        except InputError:
            raise InputError(
                f"--label-colors names class {name!r}, which is not one of "
                f"{', '.join(classes.names)}; fix the name or give --classes"
            ) from None
    return table


def decode_colors(rgb: np.ndarray, table: Mapping[Colour, int], path: Path) -> np.ndarray:
    """Class ids ``(H, W)`` uint8 of an RGB mask ``(3, H, W)`` by a :func:`color_ids`
    table; unlisted colours are 255.

    Raises:
        InputError: No pixel has a listed colour (the wrong table, or an index mask).
    """
    codes = _codes(rgb)
    out = np.full(codes.shape, NODATA, dtype="uint8")
    for colour, k in table.items():
        out[codes == (colour[0] << 16 | colour[1] << 8 | colour[2])] = k
    if not (out != NODATA).any():
        values, counts = np.unique(codes, return_counts=True)
        common = values[np.argsort(counts)[::-1][:5]]
        found = ", ".join(f"#{int(v):06x}" for v in common)
        raise InputError(
            f"{path}: no pixel has a colour of --label-colors (the mask's commonest are "
            f"{found}); fix the colours or the mask"
        )
    return out


def _codes(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (np.asarray(rgb[i], dtype="uint32") for i in range(3))
    return r << 16 | g << 8 | b

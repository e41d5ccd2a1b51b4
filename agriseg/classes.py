"""The field-health classes: ids, names and colours, in one registry."""

from __future__ import annotations

from dataclasses import dataclass

#: Value written where the input has no valid data (nodata, alpha, mask).
NODATA = 255


@dataclass(frozen=True)
class FieldClass:
    """One output class: integer id, name and display colour (RGB)."""

    id: int
    name: str
    colour: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


#: The four classes every agriseg model predicts, in id order.
CLASSES: tuple[FieldClass, ...] = (
    FieldClass(0, "soil", (150, 105, 60)),
    FieldClass(1, "crop", (40, 160, 50)),
    FieldClass(2, "weed", (230, 40, 160)),
    FieldClass(3, "diseased", (250, 190, 20)),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


def class_by_name(name: str) -> FieldClass:
    """Return the class called ``name``; the error lists the valid names."""
    for c in CLASSES:
        if c.name == name:
            return c
    raise KeyError(f"unknown class {name!r}; expected one of {', '.join(CLASS_NAMES)}")


def class_tags() -> dict[str, str]:
    """Dataset tags naming each class id, e.g. ``{"class_0": "soil", ...}``."""
    return {f"class_{c.id}": c.name for c in CLASSES}


def colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for a class raster (nodata transparent)."""
    cmap = {c.id: (*c.colour, 255) for c in CLASSES}
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap

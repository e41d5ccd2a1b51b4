"""The classes a model predicts: ids, names, colours and agronomic roles.

Classes belong to the model: a checkpoint's metadata carries its :class:`ClassList`,
and every output (class raster colour table and tags, QGIS styles, preview legend,
summary, statistics, evaluation tables) is drawn from it. A class's *role* says what
it means to the field-health statistics, which are sums over roles:

* ``background``: bare soil, the ground between plants;
* ``crop``: the sown crop;
* ``weed``: anything competing with the crop (grass weeds, broadleaf weeds, thistle...);
* ``disease``: crop plants visibly diseased;
* ``other``: neither plant nor soil (water, residue, stones, shadow, roads).

The four classes of the shipped models are :data:`DEFAULT_CLASSES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from agriseg.errors import InputError

#: Value written where the input has no valid data (nodata, alpha, mask).
NODATA = 255

#: Whether work whose every pixel is nodata is skipped: tiles the model would see,
#: stitching, and the health pass's blocks (their results are nodata by construction).
#: False only to check that skipping changes no output.
SKIP_EMPTY = True

#: Most classes a model may predict (class rasters are uint8 and 255 is nodata).
MAX_CLASSES = 255

Role = Literal["background", "crop", "weed", "disease", "other"]

#: Every role, in the order statistics list them.
ROLES: tuple[Role, ...] = ("background", "crop", "weed", "disease", "other")

#: Roles that are vegetation (count towards vegetation cover).
VEGETATION_ROLES: tuple[Role, ...] = ("crop", "weed", "disease")

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class FieldClass:
    """One output class: integer id, name, display colour (RGB) and agronomic role."""

    id: int
    name: str
    colour: Colour
    role: Role = "other"

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "colour": self.hex, "role": self.role}


#: Words in a class name that suggest its role, tried in this order (see :func:`guess_role`).
ROLE_WORDS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    ("disease", ("disease", "diseased", "blight", "rust", "mildew", "rot", "infect", "lesion")),
    ("weed", ("weed", "thistle", "dock", "grass", "nettle", "bindweed", "ragwort", "blackgrass")),
    ("background", ("soil", "ground", "background", "bare", "earth", "dirt", "bg")),
    (
        "other",
        (
            "water",
            "residue",
            "stubble",
            "straw",
            "stone",
            "rock",
            "shadow",
            "road",
            "track",
            "other",
            "unknown",
            "void",
            "building",
            "mulch",
            "plastic",
        ),
    ),
)

#: Colours handed out to classes without one, per role, in turn.
ROLE_PALETTE: dict[Role, tuple[Colour, ...]] = {
    "background": ((150, 105, 60), (200, 170, 120), (110, 80, 50)),
    "crop": ((40, 160, 50), (120, 200, 60), (20, 110, 60), (170, 220, 120)),
    "weed": ((230, 40, 160), (220, 40, 40), (140, 60, 200), (250, 130, 30), (255, 120, 200)),
    "disease": ((250, 190, 20), (200, 120, 0), (255, 230, 100)),
    "other": ((60, 120, 220), (128, 128, 128), (0, 200, 200), (90, 90, 90), (180, 180, 180)),
}


def guess_role(name: str) -> Role:
    """A role for a class known only by its name.

    The name is split into words (``grass_weed`` → ``grass``, ``weed``) and the first
    role of :data:`ROLE_WORDS` with a matching word wins; disease words win over
    weed words (``diseased_weed`` is a disease), a name with no known word is a crop
    (``maize``, ``sugar_beet``, ``carrot``).
    """
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    for role, hints in ROLE_WORDS:
        if any(w.startswith(h) for w in words for h in hints):
            return role
    return "crop"


def parse_colour(text: str) -> Colour:
    """``#rrggbb``, ``rrggbb`` or ``r,g,b`` (0–255) as an RGB tuple."""
    value = text.strip()
    hex_match = re.fullmatch(r"#?([0-9a-fA-F]{6})", value)
    if hex_match:
        digits = hex_match.group(1)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        r, g, b = (int(p) for p in parts)
        return (r, g, b)
    raise InputError(f"colour {text!r}: expected #rrggbb (e.g. #28a032) or r,g,b (0-255)")


def _check_role(role: str, where: str) -> Role:
    if role not in ROLES:
        raise InputError(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return cast(Role, role)


@dataclass(frozen=True)
class ClassList(Sequence[FieldClass]):
    """The classes of a model, ids ``0..n-1`` in order."""

    classes: tuple[FieldClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise InputError("a model needs at least one class")
        if len(self.classes) > MAX_CLASSES:
            raise InputError(f"{len(self.classes)} classes: at most {MAX_CLASSES} are supported")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise InputError(f"class ids {ids} must be 0, 1, 2... in order")
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"class names must be unique; repeated: {', '.join(dupes)}")
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_\-]+", n)]
        if bad:
            raise InputError(
                f"class name(s) {bad}: use letters, digits, '_' and '-' only (they become "
                "column names such as <name>_share)"
            )

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[FieldClass]:
        return iter(self.classes)

    def __getitem__(self, index: Any) -> Any:
        return self.classes[index]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def by_name(self, name: str) -> FieldClass:
        """The class called ``name`` (any case); the error lists the valid names."""
        key = name.strip().lower()
        for c in self.classes:
            if c.name.lower() == key:
                return c
        raise InputError(f"unknown class {name!r}; expected one of {', '.join(self.names)}")

    def ids_with_role(self, role: Role) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes if c.role == role)

    def tags(self) -> dict[str, str]:
        """Tags naming each class id and its role: ``class_0=soil``, ``class_0_role=...``."""
        tags = {}
        for c in self.classes:
            tags[f"class_{c.id}"] = c.name
            tags[f"class_{c.id}_role"] = c.role
        return tags

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table for a class raster (nodata transparent)."""
        cmap = {c.id: (*c.colour, 255) for c in self.classes}
        cmap[NODATA] = (0, 0, 0, 0)
        return cmap

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.classes]

    def select(self, ids: Iterable[int]) -> ClassList:
        """The classes of ``ids``, in id order, renumbered ``0..n-1``; names, colours and
        roles are kept."""
        kept = sorted(set(ids))
        return ClassList(
            tuple(
                FieldClass(k, c.name, c.colour, c.role) for k, c in enumerate(self[i] for i in kept)
            )
        )

    # -- construction ---------------------------------------------------------------

    @classmethod
    def build(
        cls,
        names: Iterable[str],
        colours: Mapping[str, Colour] | None = None,
        roles: Mapping[str, Role] | None = None,
    ) -> ClassList:
        """Classes with ids in the order of ``names``; missing roles are guessed from the
        names (:func:`guess_role`), missing colours come from each role's palette."""
        colours = colours or {}
        roles = roles or {}
        names = list(names)
        given = dict(DEFAULT_BY_NAME)
        used: dict[Role, int] = dict.fromkeys(ROLES, 0)
        out = []
        for k, name in enumerate(names):
            default = given.get(name)
            role = roles.get(name) or (default.role if default else guess_role(name))
            colour = colours.get(name)
            if colour is None and default is not None and roles.get(name) in (None, default.role):
                colour = default.colour
            if colour is None:
                palette = ROLE_PALETTE[role]
                colour = palette[used[role] % len(palette)]
            used[role] += 1
            out.append(FieldClass(k, name, colour, role))
        return cls(tuple(out))

    @classmethod
    def from_json(cls, data: Any, where: str = "classes") -> ClassList:
        """Classes from checkpoint metadata or a classes file.

        Accepts a list of names (checkpoints written before roles existed: the four
        default classes keep their colours and roles), a list of objects with ``name``
        and optional ``colour``/``color`` and ``role`` (ids follow the list order, or an
        ``id`` key gives them), or an object mapping names to such objects.
        """
        if isinstance(data, Mapping):
            data = [{"name": k, **(v if isinstance(v, Mapping) else {})} for k, v in data.items()]
        if not isinstance(data, list) or not data:
            raise InputError(
                f"{where}: expected a list of classes, e.g. "
                '[{"name": "soil", "role": "background", "colour": "#96693c"}, ...]'
            )
        if all(isinstance(d, str) for d in data):
            return cls.build(data)
        items = []
        for n, item in enumerate(data):
            if not isinstance(item, Mapping) or "name" not in item:
                raise InputError(f"{where}: class {n} has no name: {item!r}")
            items.append(item)
        if all("id" in i for i in items):
            items = sorted(items, key=lambda i: int(i["id"]))
        names = [str(i["name"]) for i in items]
        colours = {
            str(i["name"]): parse_colour(str(i.get("colour", i.get("color"))))
            for i in items
            if i.get("colour", i.get("color")) is not None
        }
        roles = {
            str(i["name"]): _check_role(str(i["role"]), f"{where}: class {i['name']!r}")
            for i in items
            if i.get("role") is not None
        }
        return cls.build(names, colours, roles)

    @classmethod
    def parse(cls, text: str) -> ClassList:
        """Classes from ``--classes``: a JSON file, or ``name[:role][:#colour],...``.

        E.g. ``soil:background,maize:crop,grass_weed:weed:#e628a0,thistle``.
        """
        path = Path(text)
        if path.suffix.lower() == ".json" or path.is_file():
            if not path.is_file():
                raise InputError(f"{path}: no such classes file; check --classes")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: not a readable JSON classes file ({exc})") from None
            return cls.from_json(data, str(path))
        names: list[str] = []
        colours: dict[str, Colour] = {}
        roles: dict[str, Role] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            fields = part.split(":")
            name = fields[0].strip()
            for extra in fields[1:]:
                extra = extra.strip()
                if extra.startswith("#"):
                    colours[name] = parse_colour(extra)
                else:
                    roles[name] = _check_role(extra, f"--classes {part!r}")
            names.append(name)
        if not names:
            raise InputError(f"--classes {text!r}: give a JSON file or e.g. soil,crop,weed")
        return cls.build(names, colours, roles)

    @classmethod
    def of_class_raster(cls, src: Any) -> ClassList:
        """The classes an open class raster (a rasterio dataset) records in its tags and
        colour table; :data:`DEFAULT_CLASSES` for one that records none."""
        try:
            colormap = src.colormap(1)
        except ValueError:  # no colour table
            colormap = None
        return cls.from_tags(src.tags(), colormap) or DEFAULT_CLASSES

    @classmethod
    def from_tags(
        cls, tags: Mapping[str, str], colormap: Mapping[int, Sequence[int]] | None = None
    ) -> ClassList | None:
        """Classes recorded in a class raster's tags (and colour table); None if none are."""
        names = []
        k = 0
        while f"class_{k}" in tags:
            names.append(tags[f"class_{k}"])
            k += 1
        if not names:
            return None
        colours = {}
        if colormap:
            for i, name in enumerate(names):
                if i in colormap:
                    colours[name] = cast(Colour, tuple(int(v) for v in colormap[i][:3]))
        roles = {
            name: _check_role(tags[f"class_{i}_role"], f"tag class_{i}_role")
            for i, name in enumerate(names)
            if f"class_{i}_role" in tags
        }
        return cls.build(names, colours, roles)


#: The four classes of the shipped models, in id order.
DEFAULT_CLASSES = ClassList(
    (
        FieldClass(0, "soil", (150, 105, 60), "background"),
        FieldClass(1, "crop", (40, 160, 50), "crop"),
        FieldClass(2, "weed", (230, 40, 160), "weed"),
        FieldClass(3, "diseased", (250, 190, 20), "disease"),
    )
)
DEFAULT_BY_NAME = {c.name: c for c in DEFAULT_CLASSES}

#: Compatibility names for the default classes.
CLASSES = DEFAULT_CLASSES
CLASS_NAMES: tuple[str, ...] = DEFAULT_CLASSES.names

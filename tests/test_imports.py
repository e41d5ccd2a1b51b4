"""The package's layout: stages import downwards only, no module imports itself in a circle.

Every module under ``agriseg/`` is parsed (not imported) and each ``agriseg`` import it
makes, at module level or inside a function, is an edge; imports under ``if
TYPE_CHECKING:`` are left out (they never run). Each module belongs to a *floor*: a
subpackage (``agriseg.io``, ``agriseg.models``...) or a loose module, and
:data:`ALLOWED` says which floors each may import (its ``__init__`` docstring says the
same in words).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agriseg

PACKAGE = Path(agriseg.__file__).parent

#: The loose modules every floor may read: they import nothing heavy and nothing above.
BASE = {"agriseg.errors", "agriseg.optional", "agriseg.classes", "agriseg.config"}

#: Floor -> the floors it may import (besides itself). Lower floors never import
#: higher ones; the operations (run, batch, bench) sit on top.
ALLOWED: dict[str, set[str]] = {
    "agriseg": BASE,  # __init__: the public names
    "agriseg.errors": set(),
    "agriseg.optional": {"agriseg.errors"},
    "agriseg.classes": {"agriseg.errors"},
    "agriseg.config": {"agriseg.errors", "agriseg.optional"},
    "agriseg.weights": set(),
    "agriseg.io": BASE,
    "agriseg.models": BASE | {"agriseg.io"},
    "agriseg.segmentation": BASE | {"agriseg.io", "agriseg.models"},
    "agriseg.health": BASE | {"agriseg.io", "agriseg.segmentation"},
    "agriseg.field": BASE | {"agriseg.io", "agriseg.health"},
    "agriseg.reliability": BASE
    | {"agriseg.io", "agriseg.models", "agriseg.segmentation", "agriseg.health"},
    "agriseg.run": BASE
    | {
        "agriseg.io",
        "agriseg.models",
        "agriseg.segmentation",
        "agriseg.health",
        "agriseg.reliability",
    },
    "agriseg.learning": BASE
    | {"agriseg.io", "agriseg.models", "agriseg.segmentation", "agriseg.run"},
    "agriseg.batch": BASE | {"agriseg.io", "agriseg.models", "agriseg.run"},
    "agriseg.bench": BASE
    | {"agriseg.io", "agriseg.models", "agriseg.segmentation", "agriseg.run", "agriseg.learning"},
}

#: At most this many modules sit loose in ``agriseg/`` besides ``__init__.py``.
MAX_LOOSE = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, name: str, modules: set[str]) -> set[str]:
    """The ``agriseg`` modules that module ``name`` imports when it runs (anywhere in
    its body, ``TYPE_CHECKING`` blocks excepted)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".")
                if not name_is_package(name, modules):
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                # ``from agriseg.health import products`` imports a module, not a name.
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {m for m in found if m in modules and m != name}


def name_is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    names = set(modules)
    return {
        n: imported_modules(p.read_text(encoding="utf-8"), n, names) for n, p in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports in ``graph`` (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def floor_of(module: str) -> str:
    """A module's floor: its subpackage (``agriseg.health``) or itself when loose."""
    parts = module.split(".")
    if len(parts) <= 2:
        return module
    return ".".join(parts[:2])


def floor_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        floor = floor_of(module)
        allowed = ALLOWED.get(floor)
        for target in sorted(targets):
            other = floor_of(target)
            if other == floor or other == "agriseg":  # a package's own __init__
                continue
            if allowed is None or other not in allowed:
                bad.append(f"{module} imports {target} ({floor} may not import {other})")
    return bad


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_floors_import_only_downwards() -> None:
    graph = import_graph()
    assert floor_violations(graph) == []
    assert set(map(floor_of, graph)) <= set(ALLOWED), "a floor missing from ALLOWED"


def test_the_allowed_table_has_no_cycle() -> None:
    floors = {floor: allowed - {floor} for floor, allowed in ALLOWED.items()}
    assert find_cycle(floors) is None


def test_few_loose_modules() -> None:
    loose = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    assert len(loose) <= MAX_LOOSE, sorted(loose)


def test_every_subpackage_says_what_it_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init} has no docstring"
        if init.parent.name != "weights":
            assert "may import" in doc.lower(), f"{init}: say which floors it may import"


# The checks themselves can fail:


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "d": {"a", "b"}}) is None


def test_an_upward_import_is_found() -> None:
    graph = {"agriseg.io.raster": {"agriseg.health.products"}, "agriseg.health.products": set()}
    assert floor_violations(graph) == [
        "agriseg.io.raster imports agriseg.health.products "
        "(agriseg.io may not import agriseg.health)"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from agriseg.io.raster import open_raster", {"agriseg.io.raster"}),
        ("def f():\n    from agriseg.io import raster", {"agriseg.io.raster"}),
        ("import agriseg.health.products", {"agriseg.health.products"}),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import agriseg.io.raster",
            set(),
        ),
        ("from . import raster", {"agriseg.io.raster"}),
    ],
)
def test_imports_are_read_everywhere_but_type_checking(source: str, expected: set[str]) -> None:
    modules = {"agriseg.io", "agriseg.io.raster", "agriseg.io.grid", "agriseg.health.products"}
    assert imported_modules(source, "agriseg.io.grid", modules) == expected

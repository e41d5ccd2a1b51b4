"""The README stays a quick start, the guide under docs/ speaks of the product only,
and every page of the guide is reachable from mkdocs.yml's nav.

`make docs` (part of `make test`) builds the guide with `mkdocs build --strict`, which
checks links and anchors; these tests check what MkDocs does not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"
README_MAX_LINES = 300

# Words about how agriseg is developed, not what it does: a user cannot act on them.
# Case-insensitive, on word boundaries ("an ONNX Runtime session" stays allowed).
PROCESS_WORDS = [
    r"this session",
    r"work session",
    r"session \d+",
    r"lent",
    r"borrowed",
    r"device machine",
    r"development step",
    r"helpers?",
    r"duplicates tool",
    r"issue #\d+",
    r"CEO",
    r"worktrees?",
    r"tool library",
    r"coordinator",
]
# Case-sensitive: labels of measurement runs ("run D") and commit hashes in backticks.
PROCESS_LABELS = [r"\brun [A-D]\b", r"`[0-9a-f]{7,40}`"]


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _user_texts() -> list[Path]:
    return [README, *_pages()]


def _process_words(text: str) -> list[str]:
    found = []
    for word in PROCESS_WORDS:
        found += re.findall(rf"\b{word}\b", text, flags=re.IGNORECASE)
    for label in PROCESS_LABELS:
        found += re.findall(label, text)
    return found


def _nav_pages(nav: object) -> list[str]:
    """Every page file named anywhere in a (nested) MkDocs nav."""
    if isinstance(nav, str):
        return [nav] if nav.endswith(".md") else []
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    return []


def test_readme_is_a_quick_start() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it a quick start of at most "
        f"{README_MAX_LINES} and move the rest into a page under docs/"
    )
    head = "\n".join(lines[:40]).lower()
    # Users must learn before scrolling what the shipped models were trained on.
    assert "generated" in head or "synthetic" in head


@pytest.mark.parametrize("path", _user_texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_of_the_product_only(path: Path) -> None:
    found = _process_words(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)} speaks of how agriseg is developed: {found}"


def test_process_words_are_caught() -> None:
    caught = _process_words(
        "Measured in this session on the lent device machine (run D, `ee20791`), issue #17."
    )
    assert len(caught) == 6, caught
    allowed = "ONNX Runtime session options; run a survey; a lentil field; the ISOBUS task"
    assert _process_words(allowed) == []


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load(MKDOCS.read_text(encoding="utf-8"))
    assert config.get("strict") is True
    docs_dir = ROOT / config.get("docs_dir", "docs")
    in_nav = _nav_pages(config["nav"])
    pages = [str(page.relative_to(docs_dir)) for page in _pages()]
    assert sorted(set(in_nav)) == sorted(in_nav), "a page is listed twice in the nav"
    assert set(pages) - set(in_nav) == set(), "pages missing from mkdocs.yml's nav"
    assert set(in_nav) - set(pages) == set(), "nav entries without a page"


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert local, "the README links into the guide"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"

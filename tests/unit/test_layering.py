"""The layout rules of docs/architecture.md, checked on the source with `ast`.

Each project package has an explicit rule, the "may import" column of the doc's
table: the ground (`parceltrack`) imports no other project package; storage and
`edge` only the ground; the other stages the ground and storage, never another
stage; the simulator the ground, storage and edge (for its protocol codecs); the
composition and the benchmarks anything (the benchmarks run private services).
So only the composition, the benchmarks and the tests import the composition, and
nothing in production imports the simulator or the benchmarks. Imports inside
functions count as well: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("edge", "ingest", "detect", "api", "notify", "quality")
PROJECT = frozenset({"parceltrack", "storage", *STAGES, "firmware_sim", "composition", "bench"})

# package -> the other project packages it may import (its own is always allowed).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "parceltrack": frozenset(),
    "storage": frozenset({"parceltrack"}),
    "edge": frozenset({"parceltrack"}),
    "ingest": frozenset({"parceltrack", "storage"}),
    "detect": frozenset({"parceltrack", "storage"}),
    "api": frozenset({"parceltrack", "storage"}),
    "quality": frozenset({"parceltrack", "storage"}),
    "notify": frozenset({"parceltrack", "storage"}),
    "firmware_sim": frozenset({"parceltrack", "storage", "edge"}),
    "composition": PROJECT,
    "bench": PROJECT,
}
FORBIDDEN: dict[str, frozenset[str]] = {
    package: PROJECT - allowed - {package} for package, allowed in MAY_IMPORT.items()
}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imported_packages(path.read_text())
        if name in forbidden
    ]


def test_imports_inside_functions_and_from_imports_are_seen() -> None:
    """The scan finds `import` and `from ... import` alike, also inside functions."""
    source = "import os\ndef f():\n    import edge.agent\n    from api import app\n"
    assert imported_packages(source) == [(1, "os"), (3, "edge"), (4, "api")]


def _as_written(allowed: frozenset[str]) -> str:
    """How the doc's "may import" column words a rule (before any parenthesis)."""
    if not allowed:
        return "nothing of the project"
    if allowed == PROJECT:
        return "everything"
    words = {"parceltrack": "the ground"}
    order = ["parceltrack", "storage", *STAGES]
    return ", ".join(words.get(p, p) for p in order if p in allowed)


def test_the_architecture_doc_states_the_same_rules() -> None:
    """Each package's "may import" in docs/architecture.md says what MAY_IMPORT allows."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    written: dict[str, str] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].count("/") == 1:
            package = cells[0].split("/")[0].strip("`")
            written[package] = cells[2].split(" (")[0]
    expected = {package: _as_written(allowed) for package, allowed in MAY_IMPORT.items()}
    assert {p: w for p, w in written.items() if p in MAY_IMPORT} == expected


def test_every_project_package_is_covered() -> None:
    """Each package on disk has an explicit rule, so a new one cannot slip past the test."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk == PROJECT == set(MAY_IMPORT)


# The composition and the benchmarks may import anything: nothing to check there.
CHECKED = sorted(package for package, forbidden in FORBIDDEN.items() if forbidden)


@pytest.mark.parametrize("package", CHECKED, ids=CHECKED)
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    """A package imports none of the project packages its layer may not depend on."""
    assert violations(package) == []

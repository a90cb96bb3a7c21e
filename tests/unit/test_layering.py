"""The layout rules of docs/architecture.md, checked on the source with `ast`.

The ground (`parceltrack`) imports no other project package; a stage imports the
ground and storage only, never another stage, the simulator, the composition or
the benchmarks; storage imports no stage, simulator or composition; only the
composition, the benchmarks and the tests import the composition. Imports inside
functions count as well: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("edge", "ingest", "detect", "api")
PROJECT = ("parceltrack", "storage", *STAGES, "composition", "firmware_sim", "bench")
OUTSIDE_PRODUCTION = {"firmware_sim", "composition", "bench"}

FORBIDDEN: dict[str, set[str]] = {
    "parceltrack": set(PROJECT) - {"parceltrack"},
    **{stage: (set(STAGES) - {stage}) | OUTSIDE_PRODUCTION for stage in STAGES},
    "storage": set(STAGES) | OUTSIDE_PRODUCTION,
    "firmware_sim": {"composition"},
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


def test_every_project_package_is_covered() -> None:
    """Each package of the project has a rule, so a new one cannot slip past the test."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= set(PROJECT)


@pytest.mark.parametrize("package", sorted(FORBIDDEN), ids=sorted(FORBIDDEN))
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    """A package imports none of the project packages its layer may not depend on."""
    assert violations(package) == []

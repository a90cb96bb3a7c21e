"""Which private PostgreSQL instances preload TimescaleDB (decided from the library folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composition.services import instance_settings


@pytest.mark.parametrize(
    ("files", "preloaded"),
    [
        pytest.param(["timescaledb.so"], True, id="loader"),
        pytest.param(["timescaledb-2.28.3.so"], True, id="versioned"),
        pytest.param(["plpgsql.so", "timescaledb.control"], False, id="absent"),
    ],
)
def test_private_instances_preload_timescaledb_when_its_library_is_installed(
    tmp_path: Path, files: list[str], preloaded: bool
) -> None:
    """A private instance's config preloads timescaledb exactly when its library exists."""
    for name in files:
        (tmp_path / name).write_bytes(b"")
    line = "shared_preload_libraries = 'timescaledb'"
    assert (line in instance_settings(True, tmp_path)) is preloaded
    assert (line in instance_settings(False, tmp_path)) is preloaded

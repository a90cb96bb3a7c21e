"""Migrating on a server where TimescaleDB is installed but not preloaded, and which
private instances preload it.

TimescaleDB is in no registry these machines reach, so the server in that state is
a real PostgreSQL started from a relocated copy of the installation (PostgreSQL finds
share/ and lib/ relative to its own binary) whose extension folder also holds a
`timescaledb` extension that fails as TimescaleDB does when it is not preloaded.
The system's own PostgreSQL folders are never written to.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from composition.services import (
    PrivatePostgres,
    has_timescale_library,
    postgres_bindir,
    postgres_libdir,
)
from storage.migrations import (
    MIGRATIONS,
    PRELOAD_FIX,
    TIMESCALE_MOVE,
    TimescaleUnavailable,
    migrate,
)

ROOT = Path(__file__).resolve().parents[2]

# TimescaleDB's loader refuses CREATE EXTENSION without preloading with a FATAL
# (`extension_load_without_preload`: "must be preloaded", and a hint), which ends the
# session. SQL cannot raise a FATAL with its own text, so the stand-in sends the real
# message as a WARNING and then ends its own backend: the client sees the session end
# with a FATAL during CREATE EXTENSION, as with the real thing. A database with
# `parceltrack.stand_in_preloaded = on` plays a server whose preloading was fixed: the
# extension is then created (empty).
NOT_PRELOADED_SQL = """\
DO $$ BEGIN
    IF current_setting('parceltrack.stand_in_preloaded', true) = 'on' THEN
        RETURN;
    END IF;
    RAISE WARNING 'extension "timescaledb" must be preloaded'
        USING HINT = 'Please preload the timescaledb library via shared_preload_libraries.';
    PERFORM pg_terminate_backend(pg_backend_pid());
    -- The termination is served at the next interrupt check, at the latest in the sleep;
    -- should it not be, the ERROR keeps the extension uncreated and the tests fail.
    PERFORM pg_sleep(5);
    RAISE EXCEPTION 'the stand-in outlived the end of its own session';
END $$;
"""


def _pg_config(bindir: Path, option: str) -> Path:
    out = subprocess.run(
        [str(bindir / "pg_config"), option], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _link_folder(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if not entry.name.startswith("timescaledb"):
            (target / entry.name).symlink_to(entry)


def relocated_postgres(prefix: Path) -> Path:
    """A copy of this machine's PostgreSQL under `prefix` whose extension folder also
    holds a not-preloaded `timescaledb`; returns its bindir."""
    bindir = (postgres_bindir() / "postgres").resolve().parent
    sharedir = _pg_config(bindir, "--sharedir")
    libdir = _pg_config(bindir, "--pkglibdir")
    common = Path(os.path.commonpath([bindir, sharedir, libdir]))
    new_bin = prefix / bindir.relative_to(common)
    new_share = prefix / sharedir.relative_to(common)
    new_lib = prefix / libdir.relative_to(common)
    new_bin.mkdir(parents=True)
    # Binaries are linked or copied, not symlinked: PostgreSQL resolves symlinks to
    # find its own location, and with it share/ and lib/.
    for name in ("postgres", "initdb", "pg_ctl", "pg_config"):
        _link_or_copy(bindir / name, new_bin / name)
    # Folders of links, leaving out a real TimescaleDB where one is installed: this
    # server is the unpreloaded one on every machine, and the stand-in's files below
    # are written into the copy, never through a link into the system's folders.
    _link_folder(libdir, new_lib)
    new_share.mkdir(parents=True)
    for entry in sharedir.iterdir():
        if entry.name != "extension":
            (new_share / entry.name).symlink_to(entry)
    extension = new_share / "extension"
    _link_folder(sharedir / "extension", extension)
    (extension / "timescaledb.control").write_text(
        "comment = 'stands in for TimescaleDB installed but not preloaded'\n"
        "default_version = '2.28.3'\nrelocatable = false\n"
    )
    (extension / "timescaledb--2.28.3.sql").write_text(NOT_PRELOADED_SQL)
    return new_bin


@pytest.fixture(scope="module")
def unpreloaded_bindir() -> Iterator[Path]:
    prefix = Path(tempfile.mkdtemp(prefix="parceltrack-relocated-pg-"))
    prefix.chmod(0o755)  # the server may run as `postgres`
    try:
        yield relocated_postgres(prefix / "usr")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def unpreloaded_server(services_dir: Path, unpreloaded_bindir: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(services_dir / "unpreloaded-postgres", bindir=unpreloaded_bindir)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def unpreloaded_dsn(unpreloaded_server: PrivatePostgres) -> Iterator[str]:
    admin = unpreloaded_server.dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS unpreloaded WITH (FORCE)")
        conn.execute("CREATE DATABASE unpreloaded")
    yield unpreloaded_server.dsn("unpreloaded")


def test_the_server_lists_timescaledb_but_ends_the_session_creating_it(
    unpreloaded_dsn: str,
) -> None:
    """The relocated server is in the state under test: listed, 'must be preloaded', a FATAL."""
    notices: list[str] = []
    with psycopg.connect(unpreloaded_dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        listed = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        assert listed == (1,)
        with pytest.raises(psycopg.OperationalError) as raised:
            conn.execute("CREATE EXTENSION timescaledb")
        assert raised.value.diag.severity_nonlocalized == "FATAL"
        assert conn.closed
    assert any("must be preloaded" in n for n in notices), notices
    with psycopg.connect(unpreloaded_dsn) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            is None
        )


def test_migrate_falls_back_to_plain_postgres_with_a_warning_naming_the_fix(
    unpreloaded_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrate applies the plain-PostgreSQL schema and warns how to preload TimescaleDB."""
    with caplog.at_level(logging.WARNING, logger="storage.migrations"):
        assert migrate(unpreloaded_dsn) == [m.version for m in MIGRATIONS]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(PRELOAD_FIX in w and "must be preloaded" in w for w in warnings), warnings
    assert "shared_preload_libraries = 'timescaledb'" in PRELOAD_FIX
    assert "timescaledb-tune" in PRELOAD_FIX
    with psycopg.connect(unpreloaded_dsn) as conn:
        flavours = conn.execute("SELECT DISTINCT flavour FROM schema_migrations").fetchall()
        assert flavours == [("postgres",)]
    assert migrate(unpreloaded_dsn) == []


def test_require_timescale_refuses_such_a_server_with_the_fix(unpreloaded_dsn: str) -> None:
    """`db migrate --require-timescale` exits 2 with the fix and no traceback."""
    with pytest.raises(TimescaleUnavailable, match=r"not preloaded.*must be preloaded"):
        migrate(unpreloaded_dsn, require_timescale=True)
    result = subprocess.run(
        [sys.executable, "-m", "composition.cli", "db", "migrate", "--require-timescale"],
        env={**os.environ, "PARCELTRACK_DSN": unpreloaded_dsn},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert PRELOAD_FIX in result.stderr
    assert "must be preloaded" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(unpreloaded_dsn) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def test_a_database_migrated_for_plain_postgres_stays_plain_once_timescaledb_works(
    unpreloaded_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database recorded as plain PostgreSQL stays plain: no extension, a warning how to move."""
    migrate(unpreloaded_dsn)
    with psycopg.connect(unpreloaded_dsn, autocommit=True) as conn:
        conn.execute("ALTER DATABASE unpreloaded SET parceltrack.stand_in_preloaded = 'on'")
    with psycopg.connect(unpreloaded_dsn) as conn:
        # The preloading is fixed: a new session could now create the extension.
        conn.execute("CREATE EXTENSION timescaledb")
        conn.rollback()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="storage.migrations"):
        assert migrate(unpreloaded_dsn) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(TIMESCALE_MOVE in w for w in warnings), warnings
    with pytest.raises(TimescaleUnavailable, match="migrated for plain PostgreSQL"):
        migrate(unpreloaded_dsn, require_timescale=True)
    with psycopg.connect(unpreloaded_dsn) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            is None
        )
        flavours = conn.execute("SELECT DISTINCT flavour FROM schema_migrations").fetchall()
        assert flavours == [("postgres",)]


def test_a_private_instance_preloads_nothing_without_the_library(
    unpreloaded_bindir: Path, unpreloaded_server: PrivatePostgres
) -> None:
    """The relocated prefix has no timescaledb library, so its instance preloads nothing."""
    assert not has_timescale_library(postgres_libdir(unpreloaded_bindir))
    with psycopg.connect(unpreloaded_server.dsn()) as conn:
        assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("",)

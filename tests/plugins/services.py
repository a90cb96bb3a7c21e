"""Fixtures: private PostgreSQL and Mosquitto for the test session, fresh databases per test.

Set PARCELTRACK_TIMESCALE_DSN to a TimescaleDB database (with CREATEDB rights) and
every test using `storage_dsn` runs once more against it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from composition.services import PrivateMosquitto, PrivatePostgres
from storage.migrations import migrate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "parceltrack_template"


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project-local folder for this session's private services (.local is git-ignored)."""
    path = ROOT / ".local" / f"test-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(services_dir: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(services_dir / "postgres")
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def mqtt_server(services_dir: Path) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(services_dir / "mosquitto")
    broker.start()
    yield broker
    broker.destroy()


@pytest.fixture(scope="session")
def _template(pg_server: PrivatePostgres) -> str:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate(pg_server.dsn(TEMPLATE))
    return TEMPLATE


def _fresh_database(admin_dsn: str, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return make_conninfo(admin_dsn, dbname=name)


def _drop_database(admin_dsn: str, dsn: str) -> None:
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_dsn(pg_server: PrivatePostgres, _template: str) -> Iterator[str]:
    """A migrated, empty database on the private PostgreSQL, dropped after the test."""
    dsn = _fresh_database(pg_server.dsn(), _template)
    yield dsn
    _drop_database(pg_server.dsn(), dsn)


@pytest.fixture
def empty_db_dsn(pg_server: PrivatePostgres) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    dsn = _fresh_database(pg_server.dsn(), None)
    yield dsn
    _drop_database(pg_server.dsn(), dsn)


def _backends() -> list[object]:
    timescale = pytest.param(
        "timescale",
        marks=pytest.mark.skipif(
            not os.environ.get("PARCELTRACK_TIMESCALE_DSN"),
            reason="PARCELTRACK_TIMESCALE_DSN is not set",
        ),
        id="timescale",
    )
    return [pytest.param("postgres", id="postgres"), timescale]


@pytest.fixture(params=_backends())
def storage_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_empty_dsn(storage_backend: str, pg_server: PrivatePostgres) -> Iterator[str]:
    """An empty database on plain PostgreSQL, or on the TimescaleDB the env var names."""
    admin = (
        os.environ["PARCELTRACK_TIMESCALE_DSN"]
        if storage_backend == "timescale"
        else (pg_server.dsn())
    )
    dsn = _fresh_database(admin, None)
    yield dsn
    _drop_database(admin, dsn)


@pytest.fixture
def storage_dsn(storage_empty_dsn: str) -> str:
    """A migrated database on each storage backend (TimescaleDB when configured)."""
    migrate(storage_empty_dsn)
    return storage_empty_dsn

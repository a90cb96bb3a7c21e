"""A private PostgreSQL and Mosquitto for one benchmark run, removed afterwards."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from composition.services import PrivateMosquitto, PrivatePostgres
from storage.migrations import migrate


@contextmanager
def services(workdir: str, name: str) -> Iterator[tuple[str, str]]:
    """(migrated database DSN, broker URL) of private services under `workdir`."""
    # Not a TemporaryDirectory: its mode 0700 would shut out the postgres user.
    root = Path(workdir) / f"bench-{name}-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    server = PrivatePostgres(root / "postgres")
    broker = PrivateMosquitto(root / "mosquitto")
    try:
        server.start()
        broker.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        migrate(server.dsn("bench"))
        yield server.dsn("bench"), broker.url
    finally:
        broker.destroy()
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)

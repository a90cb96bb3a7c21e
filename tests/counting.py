"""Counting rows of the pipeline's database from a test, one connection per count."""

from __future__ import annotations

import psycopg


def count(dsn: str, sql: str) -> int:
    """The number `sql` selects, e.g. `SELECT count(*) ...`; 0 for no row or NULL."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0

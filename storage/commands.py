"""`parceltrack db migrate`: apply the schema's pending migrations."""

from __future__ import annotations

import argparse
from typing import Any

from parceltrack.config import Settings


def register(sub: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Adds `db` with `migrate`; returns its subcommands for the composition to extend."""
    db = sub.add_parser("db", help="schema migrations and reference data")
    db_sub: argparse._SubParsersAction[Any] = db.add_subparsers(dest="action", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    migrate.add_argument(
        "--require-timescale",
        action="store_true",
        help="fail unless the server gives TimescaleDB (default: fall back to plain "
        "PostgreSQL with a warning)",
    )
    migrate.set_defaults(func=run_migrate)
    return db_sub


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrations import migrate

    applied = migrate(settings.dsn, require_timescale=args.require_timescale)
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return 0

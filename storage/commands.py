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


def register_site(sub: argparse._SubParsersAction[Any]) -> None:
    """Adds `site apply` and `site export`: a centre described in site files."""
    site = sub.add_parser("site", help="a sorting centre in site files (docs/site-files.md)")
    site_sub = site.add_subparsers(dest="action", required=True)
    apply = site_sub.add_parser(
        "apply", help="check site files, print what changes, put them in force in one go"
    )
    apply.add_argument("files", nargs="+", help="site TOML files (CSV plans named inside)")
    apply.add_argument("--dry-run", action="store_true", help="check and show; change nothing")
    apply.set_defaults(func=run_site_apply)
    export = site_sub.add_parser("export", help="write a site's files from the database")
    export.add_argument("site")
    export.add_argument("--out", default=".", help="folder to write into (default: here)")
    export.set_defaults(func=run_site_export)


def run_site_apply(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    import psycopg

    from storage.sites import apply_sites, read_site_files

    sites = read_site_files([Path(f) for f in args.files])  # refuses before connecting
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        diffs = apply_sites(conn, sites, dry_run=args.dry_run)
    for site, lines in diffs.items():
        print(f"site {site}: " + (f"{len(lines)} change(s)" if lines else "no change"))
        for line in lines:
            print(f"  {line}")
    print("dry run: nothing applied" if args.dry_run else "applied")
    return 0


def run_site_export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    import psycopg

    from storage.sites import export_site

    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        for path in export_site(conn, args.site, Path(args.out)):
            print(f"wrote {path}")
    return 0

"""`parceltrack api`: serve the HTTP API, or create and revoke API keys."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from parceltrack.config import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    api = sub.add_parser("api", help="serve the HTTP API, or create and revoke API keys")
    api.add_argument(
        "action", nargs="?", default="serve", choices=("serve", "create-key", "revoke-key")
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--rate", type=float, help="public requests/s per client (default 5)")
    api.add_argument("--burst", type=float, help="public burst per client (default 20)")
    api.add_argument("--workers", type=int, default=1, help="worker processes")
    api.add_argument(
        "--language", help="of pages and messages when a request names none: en or zh-CN"
    )
    api.add_argument(
        "--role",
        default="controller",
        choices=("customer", "controller", "manager", "admin", "partner"),
    )
    api.add_argument("--account", help="a partner key's account (the manifest's account)")
    api.add_argument("--name", default="operator", help="who the key belongs to")
    api.add_argument("--key-id", type=int, help="the key to revoke")
    api.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in ("create-key", "revoke-key"):
        return _api_keys(args, settings)
    import os

    import uvicorn

    # Flags override the environment; worker processes read it again.
    if args.rate is not None:
        os.environ["PARCELTRACK_API_RATE_PER_S"] = str(args.rate)
    if args.burst is not None:
        os.environ["PARCELTRACK_API_BURST"] = str(args.burst)
    from api.language import configured

    # Refused here, before any worker starts, when it is not a language we speak.
    os.environ["PARCELTRACK_LANGUAGE"] = configured(args.language or settings.language)
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # GET /metrics then sums the workers' counters (api/metrics.py), whichever answers.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="parceltrack-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "api.app:app_from_env",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,  # a logging call per request on the lookup's hot path
        )
    finally:
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _api_keys(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import psycopg

    from api.security import create_key

    async def create() -> tuple[int, str]:
        async with await psycopg.AsyncConnection.connect(settings.dsn, autocommit=True) as conn:
            return await create_key(conn, args.name, args.role, args.account)

    if args.action == "create-key":
        if (args.role == "partner") != (args.account is not None):
            print("parceltrack: --account is needed for --role partner, and only for it",
                  file=sys.stderr)  # fmt: skip
            return 2
        key_id, key = asyncio.run(create())
        print(f"created API key {key_id} ({args.role}, {args.name}); it is shown only now:")
        print(key)
        return 0
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s",
            (args.key_id,),
        )
    if cur.rowcount == 0:
        print(f"parceltrack: no API key {args.key_id}", file=sys.stderr)
        return 2
    print(f"revoked API key {args.key_id}")
    return 0

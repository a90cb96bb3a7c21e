"""`parceltrack quality`: run the escalation scheduler and the daily report."""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import time
from typing import Any

from parceltrack.config import Settings
from parceltrack.errors import ConfigError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    quality = sub.add_parser(
        "quality", help="escalate unacknowledged alerts and overdue complaints; daily reports"
    )
    quality.add_argument("--tick", type=float, default=15.0, help="seconds between passes")
    quality.add_argument(
        "--digest-at", type=int, default=10, help="alerts due at once that make one digest"
    )
    quality.add_argument(
        "--report-at", default="06:00", help="UTC time after which yesterday's report goes out"
    )
    quality.add_argument(
        "--figures-every",
        type=float,
        default=300.0,
        help="seconds between recomputing each of the manager page's standard periods",
    )
    quality.add_argument("--once", action="store_true", help="one pass, then exit")
    quality.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from quality.service import QualitySettings, now, run_once
    from quality.service import run as run_loop

    try:
        report_at = time.fromisoformat(args.report_at)
    except ValueError as exc:
        raise ConfigError(f"--report-at {args.report_at!r} is not a time like 06:00") from exc
    if args.tick <= 0 or args.digest_at < 2 or args.figures_every <= 0:
        raise ConfigError("--tick and --figures-every must be positive, --digest-at at least 2")
    chosen = QualitySettings(
        dsn=settings.dsn,
        tick_s=args.tick,
        digest_at=args.digest_at,
        report_at=report_at,
        snapshot_every_s=args.figures_every,
    )
    if args.once:
        result = asyncio.run(run_once(chosen, now()))
        print(
            f"{result.rounds} alert rounds, {result.complaints} overdue complaints, "
            f"{result.queued} messages queued"
        )
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_loop(chosen, stop)

    asyncio.run(main())
    return 0

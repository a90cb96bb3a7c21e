"""`parceltrack notify`: the delivery engine and the customer notifier in one process."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from typing import Any

from parceltrack.config import Settings
from parceltrack.process import stop_on_signals

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    notify = sub.add_parser(
        "notify", help="send queued e-mails and webhooks; notify subscribed customers"
    )
    notify.add_argument("--smtp", help="smtp://[user:password@]host:25 or smtps://host:465")
    notify.add_argument(
        "--mail-from", default="parceltrack <notify@localhost>", help="From of e-mails"
    )
    notify.add_argument("--workers", type=int, default=8, help="messages sent at once")
    notify.add_argument("--timeout", type=float, default=10.0, help="per attempt (s)")
    notify.add_argument(
        "--retry-window", type=float, default=24 * 3600.0, help="retry for this long (s)"
    )
    notify.add_argument("--backoff-base", type=float, default=5.0, help="first retry after (s)")
    notify.add_argument("--backoff-cap", type=float, default=3600.0, help="longest wait (s)")
    notify.add_argument(
        "--rate", type=int, default=30, help="attempts per subscriber per --rate-window"
    )
    notify.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    notify.add_argument(
        "--public-url",
        default="http://127.0.0.1:8000",
        help="the API's public address, for unsubscribe links",
    )
    notify.add_argument(
        "--hold-down",
        type=float,
        default=2.0,
        help="an alert resolved within this many seconds of opening is not notified",
    )
    notify.add_argument(
        "--keep-days", type=float, default=30.0, help="delete delivered messages after (days)"
    )
    notify.add_argument(
        "--allow-private-targets",
        action="store_true",
        help="deliver webhooks to loopback and private addresses (tests, demo, closed networks)",
    )
    notify.add_argument(
        "--no-notifier", action="store_true", help="only deliver; do not follow scans and alerts"
    )
    notify.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from notify.engine import DeliveryEngine, EngineSettings
    from notify.notifier import Notifier, NotifierSettings
    from notify.policy import RateLimit, RetryPolicy
    from notify.send import SmtpServer

    engine = DeliveryEngine(
        EngineSettings(
            dsn=settings.dsn,
            smtp=SmtpServer.from_url(args.smtp, args.mail_from) if args.smtp else None,
            retry=RetryPolicy(
                base_s=args.backoff_base, cap_s=args.backoff_cap, window_s=args.retry_window
            ),
            rate=RateLimit(per_window=args.rate, window_s=args.rate_window),
            workers=args.workers,
            timeout_s=args.timeout,
            allow_private_targets=args.allow_private_targets,
            keep_days=args.keep_days,
        )
    )
    stop = stop_on_signals()
    failed: list[str] = []

    def guarded(name: str, loop: Callable[[threading.Event], None]) -> None:
        # One loop dying ends the process (non-zero), so a supervisor restarts both.
        try:
            loop(stop)
        except Exception:
            log.exception("%s stopped on an error", name)
            failed.append(name)
            stop.set()

    loops: list[tuple[str, Callable[[threading.Event], None]]] = [("delivery engine", engine.run)]
    if not args.no_notifier:
        notifier = Notifier(
            NotifierSettings(
                dsn=settings.dsn, public_url=args.public_url, hold_down_s=args.hold_down
            )
        )
        loops.append(("notifier", notifier.run))
    threads = [threading.Thread(target=guarded, args=loop, name=loop[0]) for loop in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if failed else 0

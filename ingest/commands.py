"""`parceltrack ingest`: run an ingest worker."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from parceltrack.config import Settings
from parceltrack.process import stop_on_signals


def register(sub: argparse._SubParsersAction[Any]) -> None:
    ingest = sub.add_parser("ingest", help="run an ingest worker")
    ingest.add_argument("--client-id", default="ingest-1")
    ingest.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    ingest.add_argument("--metrics-host", default="127.0.0.1")
    ingest.add_argument(
        "--max-in-flight", type=int, default=400, help="unacked messages at most (Receive Maximum)"
    )
    ingest.add_argument(
        "--report-every", type=float, default=10.0, help="seconds between accounting log lines"
    )
    ingest.add_argument(
        "--no-receipts",
        dest="receipts",
        action="store_false",
        help="publish no commit receipts (agents then resend; only to measure their cost)",
    )
    ingest.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.worker import GIL_SWITCH_INTERVAL_S, IngestSettings, IngestWorker

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # the whole process is the worker

    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    worker = IngestWorker(
        IngestSettings(
            dsn=settings.dsn,
            broker=settings.broker(),
            client_id=args.client_id,
            max_in_flight=args.max_in_flight,
            report_every_s=args.report_every,
            receipts=args.receipts,
        )
    )
    stop = stop_on_signals()

    def stop_when_told() -> None:
        stop.wait()
        worker.stop()

    threading.Thread(target=stop_when_told, daemon=True).start()
    worker.run()
    return 0

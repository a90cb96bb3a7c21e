"""`parceltrack detect`: run the detection service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from parceltrack.config import Settings
from parceltrack.process import stop_on_signals


def register(sub: argparse._SubParsersAction[Any]) -> None:
    detect = sub.add_parser("detect", help="run the detection service")
    detect.add_argument(
        "--overdue-after",
        type=float,
        default=30.0,
        help="stage standard (s) where stage_standards has none for a site, stage and class",
    )
    detect.add_argument(
        "--missing-after",
        type=float,
        default=30.0,
        help="where missing_windows has none, the window (s) after the stage deadline is "
        "this plus --missing-factor x the longer of the stage standard and learned p90",
    )
    detect.add_argument(
        "--missing-factor",
        type=float,
        default=2.0,
        help="how many stage standards a delayed parcel may still take to show up (default 2: "
        "held up to 3x its standard, it is delayed, not lost)",
    )
    detect.add_argument("--tick", type=float, default=1.0, help="seconds between ticks (<= 1)")
    detect.add_argument(
        "--skew-tolerance",
        type=float,
        default=1.0,
        help="device clock disagreement (s) at sites without their own (site_tolerances)",
    )
    detect.add_argument(
        "--sites",
        type=_sites,
        default=None,
        help="comma-separated sites this detector (a shard) owns; every site by default",
    )
    detect.add_argument("--no-mqtt", action="store_true", help="do not publish alerts on MQTT")
    detect.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="folder for state checkpoints: a restart loads the latest and follows the scan "
        "feed from it instead of replaying a day of scans (off by default)",
    )
    detect.add_argument(
        "--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints"
    )
    detect.add_argument(
        "--eta-inline",
        action="store_true",
        help="write parcel_eta on the tick thread, as before issue 17 (for benchmarks)",
    )
    detect.set_defaults(func=run)


def _sites(text: str) -> tuple[str, ...]:
    sites = tuple(s.strip() for s in text.split(","))
    if not all(sites):
        raise argparse.ArgumentTypeError(f"--sites: an empty site name in {text!r}")
    return sites


def run(args: argparse.Namespace, settings: Settings) -> int:
    from detect.reference import DetectConfig
    from detect.service import Detector, DetectSettings

    config = DetectConfig(
        default_stage_s=args.overdue_after,
        default_missing_s=args.missing_after,
        missing_factor=args.missing_factor,
        skew_tolerance_s=args.skew_tolerance,
    )
    broker = None if args.no_mqtt else settings.broker()
    detector = Detector(
        DetectSettings(
            dsn=settings.dsn,
            broker=broker,
            config=config,
            tick_s=args.tick,
            sites=args.sites,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every_s=args.checkpoint_every,
            eta_inline=args.eta_inline,
        )
    )
    detector.run(stop_on_signals())
    return 0

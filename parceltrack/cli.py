"""The `parceltrack` command: one subcommand per stage of the pipeline."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from parceltrack.config import BrokerAddress, Settings
from parceltrack.errors import ConfigError, ParceltrackError

log = logging.getLogger("parceltrack")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from firmware_sim.clock import PlaybackClock
    from firmware_sim.scenario import Scenario
    from ingest.migrations import migrate
    from ingest.reference import load_scenario

    if args.action == "migrate":
        applied = migrate(settings.dsn)
        print(f"applied migrations {applied}" if applied else "schema is up to date")
        return 0
    scenario = Scenario.load(Path(args.scenario))
    if args.clock:
        clock = PlaybackClock.load(Path(args.clock))
    else:
        try:
            start = datetime.fromisoformat(args.start) if args.start else scenario.start
        except ValueError as exc:
            raise ConfigError(f"--start {args.start!r} is not an ISO time") from exc
        clock = PlaybackClock(start, args.speed)
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        rows = load_scenario(conn, scenario, clock)
    print(
        f"loaded {len(scenario.sites)} sites, {len(scenario.read_points)} read points, "
        f"{len(scenario.stage_standards)} stage standards, {len(scenario.sort_plans)} sort "
        f"plans and {rows} manifest rows"
    )
    return 0


def cmd_sim(args: argparse.Namespace, settings: Settings) -> int:
    from firmware_sim import commands

    return commands.run(args, settings.mqtt_url, _stop_on_signals())


def cmd_edge(args: argparse.Namespace, settings: Settings) -> int:
    from edge.agent import run_agent
    from edge.config import load_agent_config

    config = load_agent_config(Path(args.config))
    url = (
        config.agent.mqtt_url
        if config.agent.mqtt_url and not args.env_broker
        else (settings.mqtt_url)
    )
    run_agent(config, BrokerAddress.from_url(url, settings.mqtt_ca_file), _stop_on_signals())
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.worker import IngestSettings, IngestWorker

    worker = IngestWorker(
        IngestSettings(
            dsn=settings.dsn,
            broker=BrokerAddress.from_url(settings.mqtt_url, settings.mqtt_ca_file),
            client_id=args.client_id,
        )
    )
    stop = _stop_on_signals()

    def stop_when_told() -> None:
        stop.wait()
        worker.stop()

    threading.Thread(target=stop_when_told, daemon=True).start()
    worker.run()
    return 0


def cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from detect.service import Detector, DetectSettings

    detector = Detector(DetectSettings(dsn=settings.dsn, overdue_after_s=args.overdue_after))
    detector.run(_stop_on_signals())
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in ("create-key", "revoke-key"):
        return _api_keys(args, settings)
    import os

    import uvicorn

    # Flags override the environment; worker processes read it again.
    if args.rate is not None:
        os.environ["PARCELTRACK_API_RATE_PER_S"] = str(args.rate)
    if args.burst is not None:
        os.environ["PARCELTRACK_API_BURST"] = str(args.burst)
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level="warning",
    )
    return 0


def _api_keys(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import psycopg

    from api.security import create_key

    async def create() -> tuple[int, str]:
        async with await psycopg.AsyncConnection.connect(settings.dsn, autocommit=True) as conn:
            return await create_key(conn, args.name, args.role)

    if args.action == "create-key":
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


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import bench

    code: int = bench.load(args.bench).run(args)
    return code


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from edge.config import load_agent_config
    from parceltrack.acl import render_acl

    print(render_acl([load_agent_config(Path(p)) for p in args.agent_config]), end="")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from parceltrack.demo import run_demo

    return run_demo(Path(args.workdir), speed=args.speed, api_port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parceltrack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a simulated sorting centre through the pipeline")
    demo.add_argument("--workdir", default=".local", help="where private services keep data")
    demo.add_argument("--speed", type=float, default=1.0, help="scenario time acceleration")
    demo.add_argument("--port", type=int, default=8000, help="API port (0: any free port)")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("sim", help="generate scenarios and play them on virtual devices")
    from firmware_sim.commands import add_arguments as add_sim_arguments

    add_sim_arguments(sim)
    sim.set_defaults(func=cmd_sim)

    edge = sub.add_parser("edge", help="run an edge agent from its TOML file")
    edge.add_argument("--config", required=True)
    edge.add_argument(
        "--env-broker",
        action="store_true",
        help="use PARCELTRACK_MQTT_URL even when the TOML names a broker",
    )
    edge.set_defaults(func=cmd_edge)

    ingest = sub.add_parser("ingest", help="run an ingest worker")
    ingest.add_argument("--client-id", default="ingest-1")
    ingest.set_defaults(func=cmd_ingest)

    detect = sub.add_parser("detect", help="run the detection service")
    detect.add_argument(
        "--overdue-after",
        type=float,
        default=30.0,
        help="seconds without a read at the next read point",
    )
    detect.set_defaults(func=cmd_detect)

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
        "--role", default="controller", choices=("customer", "controller", "manager", "admin")
    )
    api.add_argument("--name", default="operator", help="who the key belongs to")
    api.add_argument("--key-id", type=int, help="the key to revoke")
    api.set_defaults(func=cmd_api)

    import bench

    bench_parser = sub.add_parser("bench", help="benchmarks, each beside its baseline")
    bench_sub = bench_parser.add_subparsers(dest="bench", required=True)
    for name in bench.NAMES:
        module = bench.load(name)
        module.add_arguments(bench_sub.add_parser(name, help=(module.__doc__ or "").strip()))
    bench_parser.set_defaults(func=cmd_bench)

    broker = sub.add_parser("broker", help="broker configuration")
    broker_sub = broker.add_subparsers(dest="action", required=True)
    acl = broker_sub.add_parser("acl", help="print a Mosquitto acl_file for these agents")
    acl.add_argument("agent_config", nargs="+", help="agent TOML files")
    broker.set_defaults(func=cmd_broker)

    db = sub.add_parser("db", help="schema migrations and reference data")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    load = db_sub.add_parser("load-scenario", help="load a scenario's layout and manifest")
    load.add_argument("scenario")
    load.add_argument("--start", help="wall-clock time of scenario time 0 (default: nominal)")
    load.add_argument("--speed", type=float, default=1.0, help="playback acceleration")
    load.add_argument("--clock", help="a playback clock file (sim play/publish --clock-out)")
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args, Settings())
    except ParceltrackError as exc:
        print(f"parceltrack: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The `parceltrack` command. Each stage owns its subcommands (arguments and run
function, in its `commands` module); this module only gathers them, and adds what
wires stages together: the demo, broker ACLs, loading a simulator scenario."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import api.commands
import bench
import composition.site
import detect.commands
import edge.commands
import firmware_sim.commands
import ingest.commands
import notify.commands
import quality.commands
import storage.commands
from parceltrack.config import Settings
from parceltrack.errors import ConfigError, ParceltrackError

log = logging.getLogger("parceltrack")


def cmd_load_scenario(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from firmware_sim.clock import PlaybackClock
    from firmware_sim.scenario import Scenario
    from storage.reference import load

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
        rows = load(conn, scenario.reference_data(clock))
    print(
        f"loaded {len(scenario.sites)} sites, {len(scenario.read_points)} read points, "
        f"{len(scenario.stage_standards)} stage standards, {len(scenario.sort_plans)} sort "
        f"plans and {rows} manifest rows"
    )
    return 0


def cmd_broker_acl(args: argparse.Namespace, settings: Settings) -> int:
    from composition.acl import render_acl
    from edge.config import load_agent_config

    agents = [load_agent_config(Path(p)) for p in args.agent_config]
    print(render_acl(agents, bridged_sites=args.bridge_site), end="")
    return 0


def cmd_broker_bridge(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from composition.bridge import Bridge, render_bridge
    from parceltrack.config import BrokerAddress

    central = BrokerAddress.from_url(args.central, args.cafile)
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
        central = replace(central, password=password)
    print(render_bridge(Bridge(args.site, central)), end="")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from composition.demo import run_demo

    return run_demo(Path(args.workdir), speed=args.speed, api_port=args.port)


def _add_demo(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="run a simulated sorting centre through the pipeline")
    demo.add_argument("--workdir", default=".local", help="where private services keep data")
    demo.add_argument("--speed", type=float, default=1.0, help="scenario time acceleration")
    demo.add_argument("--port", type=int, default=8000, help="API port (0: any free port)")
    demo.set_defaults(func=cmd_demo)


def _add_broker(sub: argparse._SubParsersAction[Any]) -> None:
    broker = sub.add_parser("broker", help="broker configuration")
    broker_sub = broker.add_subparsers(dest="action", required=True)
    acl = broker_sub.add_parser("acl", help="print a Mosquitto acl_file for these agents")
    acl.add_argument("agent_config", nargs="*", help="agent TOML files")
    acl.add_argument(
        "--bridge-site",
        action="append",
        default=[],
        help="a site whose broker bridges to this (central) broker; repeat for each",
    )
    acl.set_defaults(func=cmd_broker_acl)
    bridge = broker_sub.add_parser(
        "bridge", help="print the mosquitto.conf block that bridges a site broker to the centre"
    )
    bridge.add_argument("--site", required=True, help="the site this broker serves")
    bridge.add_argument(
        "--central", required=True, help="the central broker: mqtt[s]://[user@]host:port"
    )
    bridge.add_argument("--cafile", help="CA that signed the central broker's certificate")
    bridge.add_argument("--password-file", help="file holding the bridge user's password")
    bridge.set_defaults(func=cmd_broker_bridge)


def _add_load_scenario(db_sub: argparse._SubParsersAction[Any]) -> None:
    load = db_sub.add_parser("load-scenario", help="load a scenario's layout and manifest")
    load.add_argument("scenario")
    load.add_argument("--start", help="wall-clock time of scenario time 0 (default: nominal)")
    load.add_argument("--speed", type=float, default=1.0, help="playback acceleration")
    load.add_argument("--clock", help="a playback clock file (sim play/publish --clock-out)")
    load.set_defaults(func=cmd_load_scenario)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parceltrack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    composition.site.register(firmware_sim.commands.register(sub))
    edge.commands.register(sub)
    ingest.commands.register(sub)
    detect.commands.register(sub)
    api.commands.register(sub)
    quality.commands.register(sub)  # issue 16
    notify.commands.register(sub)
    bench.register(sub)
    _add_broker(sub)
    _add_load_scenario(storage.commands.register(sub))
    storage.commands.register_site(sub)
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

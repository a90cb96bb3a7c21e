"""`parceltrack edge`: run an edge agent from its TOML file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from parceltrack.config import Settings
from parceltrack.process import stop_on_signals


def register(sub: argparse._SubParsersAction[Any]) -> None:
    edge = sub.add_parser("edge", help="run an edge agent from its TOML file")
    edge.add_argument("--config", required=True)
    edge.add_argument(
        "--env-broker",
        action="store_true",
        help="use PARCELTRACK_MQTT_URL even when the TOML names a broker",
    )
    edge.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from edge.agent import run_agent
    from edge.config import load_agent_config

    config = load_agent_config(Path(args.config))
    # The TOML's broker wins over PARCELTRACK_MQTT_URL unless --env-broker.
    url = None if args.env_broker else (config.agent.mqtt_url or None)
    broker = settings.broker(url)
    run_agent(config, broker, stop_on_signals())
    return 0

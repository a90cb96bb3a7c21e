"""`parceltrack sim site`: one simulated sorting centre and its edge agent in one process.

For docker-compose, where a pty cannot cross containers: the virtual scanners and the
agent that reads them share this process. As the sender of the parcels, the simulator
also loads the layout, standards, sort plans and manifest into the database
(PARCELTRACK_DSN), as a real customer's manifest upload and the site's engineering
data would arrive.
"""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from composition.pipeline import agent_toml, wait_devices_connected
from edge.agent import run_agent
from edge.config import load_agent_config
from firmware_sim.clock import PlaybackClock
from firmware_sim.commands import config_from_args, scenario_arguments
from firmware_sim.player import ScannerBank, play
from firmware_sim.scenario import ScenarioConfig, generate
from parceltrack.config import BrokerAddress, Settings
from parceltrack.errors import ConfigError
from parceltrack.process import stop_on_signals
from storage.migrations import migrate
from storage.reference import load

log = logging.getLogger(__name__)


def run_site(
    config: ScenarioConfig,
    workdir: Path,
    speed: float,
    agent: str,
    dsn: str,
    broker: BrokerAddress,
    stop: threading.Event,
) -> int:
    """Generate, load, then play the centre while the agent reads it, until `stop`."""
    if len(config.sites) != 1:
        raise ConfigError("sim site runs one site: give --sites with a single site id")
    scenario = generate(config)
    workdir.mkdir(parents=True, exist_ok=True)
    port_dir = workdir / "dev"
    bank = ScannerBank(port_dir, [r.device for r in scenario.read_points])
    config_file = workdir / "agent.toml"
    config_file.write_text(
        agent_toml(scenario, port_dir, workdir / "outbox.sqlite", agent, config.sites[0])
    )
    agent_thread = threading.Thread(
        target=run_agent, args=(load_agent_config(config_file), broker, stop), name=agent
    )
    agent_thread.start()
    try:
        wait_devices_connected(broker, {r.device for r in scenario.read_points})
        clock = PlaybackClock(datetime.now(UTC) + timedelta(seconds=1), speed)
        migrate(dsn)  # idempotent; the stack's own migrate step may not have run yet
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = load(conn, scenario.reference_data(clock))
        log.info(
            "site %s: %d parcels in the manifest; playing at %gx", config.sites[0], rows, speed
        )
        play(scenario, bank, stop=stop, clock=clock, tag_dwell_s=config.tag_dwell_s)
        stop.wait()
    finally:
        stop.set()
        agent_thread.join(15)
        bank.close()
    return 0


def register(sim: argparse._SubParsersAction[Any]) -> None:
    """Adds `sim site` to the simulator's actions."""
    site = sim.add_parser(
        "site", help="one simulated centre with its edge agent in this process (compose)"
    )
    scenario_arguments(site)
    site.set_defaults(func=run)
    site.add_argument(
        "--workdir",
        default="/var/lib/parceltrack-sim",
        help="ports, agent configuration and outbox",
    )
    site.add_argument("--speed", type=float, default=1.0)
    site.add_argument("--agent", default="agent-1")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_site(
        config_from_args(args),
        Path(args.workdir),
        args.speed,
        args.agent,
        settings.dsn,
        settings.broker(),
        stop_on_signals(),
    )

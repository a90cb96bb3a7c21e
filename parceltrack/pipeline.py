"""The whole pipeline as real processes: private services, simulator, edge agent,
ingest, detection and API. The demo runs it; the end-to-end tests run it too."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from firmware_sim.scenario import Scenario
from ingest.migrations import migrate
from ingest.reference import load_layout, load_manifest
from parceltrack.errors import ServiceError
from parceltrack.services import PrivateMosquitto, PrivatePostgres, free_port

log = logging.getLogger(__name__)


def create_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def agent_toml(scenario: Scenario, port_dir: Path, outbox: Path, agent: str) -> str:
    lines = [
        "[agent]",
        f'id = "{agent}"',
        f'site = "{scenario.site}"',
        f'outbox = "{outbox}"',
        "health_interval_s = 5",
        "",
    ]
    for rp in scenario.read_points:
        lines += [
            "[[devices]]",
            f'id = "{rp.device}"',
            'protocol = "barcode"',
            f'port = "{port_dir / rp.device}"',
            f'read_point = "{rp.read_point}"',
            "",
        ]
    return "\n".join(lines)


@dataclass
class Pipeline:
    """Everything under `workdir`; `start()` brings it up, `stop()` leaves nothing behind."""

    workdir: Path
    scenario: Scenario
    speed: float = 1.0
    api_port: int = 0
    fast_db: bool = True
    overdue_after_s: float = 30.0
    missing_after_s: float = 30.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.absolute()
        self.postgres = PrivatePostgres(self.workdir / "postgres", fast=self.fast_db)
        self.mosquitto = PrivateMosquitto(self.workdir / "mosquitto")
        self.port_dir = self.workdir / "dev"
        self.logs = self.workdir / "logs"
        if not self.api_port:
            self.api_port = free_port()

    @property
    def dsn(self) -> str:
        return self.postgres.dsn("parceltrack")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PARCELTRACK_DSN": self.dsn,
            "PARCELTRACK_MQTT_URL": self.mosquitto.url,
        }

    def start_services(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.postgres.start()
        self.mosquitto.start()
        create_database(self.postgres.dsn(), "parceltrack")
        migrate(self.dsn)
        scenario_file = self.workdir / "scenario.json"
        self.scenario.save(scenario_file)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            load_layout(conn, self.scenario)
            load_manifest(conn, self.scenario.manifest, self.scenario.site)
        (self.workdir / "agent.toml").write_text(
            agent_toml(self.scenario, self.port_dir, self.workdir / "outbox.sqlite", "agent-1")
        )

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parceltrack.cli", *args],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop them in order
        )
        self.processes[name] = proc
        return proc

    def start_processes(self) -> None:
        self.spawn("ingest", "ingest")
        self.spawn(
            "detect",
            "detect",
            "--overdue-after",
            str(self.overdue_after_s),
            "--missing-after",
            str(self.missing_after_s),
        )
        self.spawn("api", "api", "--port", str(self.api_port))
        self.spawn(
            "sim",
            "sim",
            "play",
            "--scenario",
            str(self.workdir / "scenario.json"),
            "--port-dir",
            str(self.port_dir),
            "--speed",
            str(self.speed),
            "--start-delay",
            "2",
        )
        self.spawn("edge", "edge", "--config", str(self.workdir / "agent.toml"))

    def start(self) -> None:
        self.start_services()
        self.start_processes()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.25)
        raise ServiceError(f"the API did not become healthy within {timeout:.0f}s")

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None and name != "sim":
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ServiceError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, keep_files: bool = False) -> None:
        # Producers first, so what is in flight can still land.
        for name in ("sim", "edge", "ingest", "detect", "api"):
            self.stop_process(name)
        for name in list(self.processes):
            self.stop_process(name)
        self.mosquitto.stop()
        self.postgres.stop()
        if not keep_files:
            self.mosquitto.destroy()
            self.postgres.destroy()
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

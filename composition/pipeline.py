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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg

from composition.acl import render_acl
from composition.bridge import Bridge, render_bridge
from composition.services import (
    PrivateMosquitto,
    PrivatePostgres,
    end_process,
    free_port,
    make_broker_certificates,
)
from edge.config import load_agent_config
from firmware_sim.clock import PlaybackClock
from firmware_sim.scenario import Scenario
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.errors import ServiceError, WireFormatError
from parceltrack.health import decode_health
from parceltrack.mqtt import Message, MqttClient
from storage.migrations import migrate
from storage.reference import load_layout, load_manifest, load_standards

log = logging.getLogger(__name__)


def create_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def agent_toml(
    scenario: Scenario,
    port_dir: Path,
    outbox: Path,
    agent: str,
    site: str | None = None,
    mqtt_url: str | None = None,
) -> str:
    """One agent's configuration: every device of `site` (default: the first site).

    The simulator plays RFID read points through barcode scanners sending the tag's
    SSCC as a GS1-128 label (it is given no TagSink), so every device here is 'barcode'."""
    site = site or scenario.site
    lines = [
        "[agent]",
        f'id = "{agent}"',
        f'site = "{site}"',
        f'outbox = "{outbox}"',
        "health_interval_s = 1",
        # A read the broker lost (crash, restart) goes out again after this (issue 13).
        "resend_after_s = 5",
        *([f'mqtt_url = "{mqtt_url}"'] if mqtt_url else []),
        "",
    ]
    for rp in (r for r in scenario.read_points if r.site == site):
        lines += [
            "[[devices]]",
            f'id = "{rp.device}"',
            'protocol = "barcode"',
            f'port = "{port_dir / rp.device}"',
            f'read_point = "{rp.read_point}"',
            "",
        ]
    return "\n".join(lines)


def wait_devices_connected(
    broker: BrokerAddress,
    devices: set[str],
    timeout: float = 60.0,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Until the agents' health messages report every device's port open. pyserial
    drops what a port holds when it opens it, so playing starts only after this."""
    connected: dict[str, bool] = {}

    def on_message(msg: Message) -> None:
        with contextlib.suppress(WireFormatError):
            health = decode_health(msg.topic, bytes(msg.payload))
            connected[health.device] = health.connected

    client = MqttClient(f"pipeline-{os.getpid()}", broker)
    client.on_message(on_message)
    client.start()
    try:
        if not client.wait_connected(timeout):
            raise ServiceError("cannot reach the broker to watch the agents' health")
        client.subscribe(topics.ALL_HEALTH, qos=0)
        deadline = time.monotonic() + timeout
        while not all(connected.get(d) for d in devices):
            check()
            if time.monotonic() > deadline:
                raise ServiceError(f"the agents' devices were not open within {timeout:.0f}s")
            time.sleep(0.1)
    finally:
        client.stop()


SITE_APPLY_S = 10.0  # the most `parceltrack site apply` may take when the demo starts


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
    ingest_workers: int = 1  # "ingest" (client id ingest-1), "ingest-2", ...
    # False: the caller plays the scenario itself (its ScannerBank must make the ports
    # before start_processes); the pipeline still writes the playback clock.
    spawn_sim: bool = True
    # Broker user -> password: Mosquitto then refuses anonymous clients and applies
    # the ACL (composition.acl); each process connects as its own user ("ingest",
    # "detect", "api", and each agent by its id). None: an open broker.
    broker_passwords: dict[str, str] | None = None
    # True: the broker's only listener speaks TLS, with a throwaway CA that every
    # process gets as PARCELTRACK_MQTT_CA_FILE.
    broker_tls: bool = False
    api_admin_key: str | None = None  # PARCELTRACK_API_ADMIN_KEY for the API
    api_rate: float | None = None  # public lookups/s per client (api --rate; also the burst)
    # True: each site has its own broker, bridged to the central one (composition.bridge);
    # its agent publishes there. `bridge_port(site)` is where a site's bridge connects
    # (default: the central broker itself; a test puts a cuttable link in between).
    site_brokers: bool = False
    bridge_port: Callable[[str], int] | None = None
    # True: a streaming replica of the database (pg_basebackup), read by the API.
    replica: bool = False
    # Detection shards, each owning these sites ("detect-1", "detect-2", ...); empty:
    # one detector for every site.
    detect_shards: tuple[tuple[str, ...], ...] = ()
    verbose: bool = False  # every process logs at DEBUG
    # True: the standards and sort plans are written as site files (workdir/sites) and
    # put in force with `parceltrack site apply`, as an operator does.
    site_files: bool = False
    # The notifier's SMTP server (smtp://host:port); None: e-mails wait in the queue.
    smtp_url: str | None = None
    notify_hold_down_s: float = 2.0  # alerts resolved this fast are not told customers
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.absolute()
        self.postgres = PrivatePostgres(self.workdir / "postgres", fast=self.fast_db)
        extra = ""
        if self.broker_passwords is not None:
            extra = (
                f"password_file {self.workdir / 'broker.passwd'}\n"
                f"acl_file {self.workdir / 'broker.acl'}\nlog_type all"
            )
        self.mosquitto = PrivateMosquitto(self.workdir / "mosquitto", extra_conf=extra)
        self.site_mosquittos: dict[str, PrivateMosquitto] = {}
        self.standby: PrivatePostgres | None = None
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

    def broker_url(self, user: str | None = None) -> str:
        """The broker's URL, with `user`'s credentials when the broker has a password file."""
        if self.broker_passwords is None or user is None:
            return self.mosquitto.url
        password = quote(self.broker_passwords[user], safe="")
        return self.mosquitto.url.replace("://", f"://{quote(user, safe='')}:{password}@", 1)

    def broker(self, user: str | None = None) -> BrokerAddress:
        """Where `user` connects, with the CA file when the broker speaks TLS."""
        return BrokerAddress.from_url(self.broker_url(user), self.mosquitto.ca_file)

    def env(self, user: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "PARCELTRACK_DSN": self.dsn,
            "PARCELTRACK_MQTT_URL": self.broker_url(user),
        }
        if self.api_admin_key is not None:
            env["PARCELTRACK_API_ADMIN_KEY"] = self.api_admin_key
        if self.standby is not None:
            env["PARCELTRACK_READ_DSN"] = self.standby.dsn("parceltrack")
        if self.mosquitto.ca_file is not None:
            env["PARCELTRACK_MQTT_CA_FILE"] = self.mosquitto.ca_file
        return env

    def _write_broker_security(self) -> None:
        """Password file (mosquitto_passwd hashes it) and ACL from the agents' configs."""
        assert self.broker_passwords is not None
        passwd = self.workdir / "broker.passwd"
        passwd.write_text("")
        for user, password in self.broker_passwords.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        configs = [
            load_agent_config(self.workdir / self.agent_config(i, name))
            for i, name in enumerate(self.agents())
        ]
        (self.workdir / "broker.acl").write_text(render_acl(configs))

    def start_services(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.site_brokers:
            self.site_mosquittos = {
                site: PrivateMosquitto(self.workdir / f"mosquitto-{site}")
                for site in self.agents().values()
            }
        for i, (name, site) in enumerate(self.agents().items()):
            stem = "" if i == 0 else f"{name}."
            site_broker = self.site_mosquittos.get(site)
            (self.workdir / self.agent_config(i, name)).write_text(
                agent_toml(
                    self.scenario,
                    self.port_dir,
                    self.workdir / f"{stem}outbox.sqlite",
                    name,
                    site,
                    site_broker.url if site_broker else None,
                )
            )
        if self.broker_passwords is not None:
            self._write_broker_security()
        if self.broker_tls:
            self.mosquitto.tls = make_broker_certificates(self.workdir / "tls")
        self.postgres.start()
        self.mosquitto.start()
        for site, broker in self.site_mosquittos.items():
            port = self.bridge_port(site) if self.bridge_port else self.mosquitto.port
            bridge = Bridge(site, BrokerAddress("127.0.0.1", port))
            broker.extra_conf = render_bridge(bridge)
            broker.start()
        create_database(self.postgres.dsn(), "parceltrack")
        migrate(self.dsn)
        if self.replica:
            self.standby = self.postgres.replica(self.workdir / "replica")
            self.standby.start()
        scenario_file = self.workdir / "scenario.json"
        self.scenario.save(scenario_file)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # Times do not matter yet: the standards follow the playback clock below.
            data = self.scenario.reference_data()
            load_layout(conn, data)
            load_manifest(conn, data.manifest)

    @staticmethod
    def agent_config(i: int, name: str) -> str:
        return "agent.toml" if i == 0 else f"{name}.toml"

    def agents(self) -> dict[str, str]:
        """Agent (and process) name -> its site: `agent-1`/"edge" for the first site,
        as before, `agent-{site}`/"edge-{site}" for the others."""
        sites = [s.site for s in self.scenario.sites]
        return {("agent-1" if i == 0 else f"agent-{s}"): s for i, s in enumerate(sites)}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("ab")
        verbose = ("-v",) if self.verbose else ()
        proc = subprocess.Popen(
            [sys.executable, "-m", "composition.cli", *verbose, *args],
            env=self.env(self._broker_user(name)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop them in order
        )
        self.processes[name] = proc
        self.commands[name] = args
        return proc

    def _broker_user(self, process: str) -> str | None:
        """Who a process is on the broker: ingest workers share "ingest"; an edge
        process is its agent."""
        if process.startswith("ingest"):
            return "ingest"
        if process.startswith("edge"):
            sites = list(self.agents())
            return sites[0] if process == "edge" else f"agent-{process.removeprefix('edge-')}"
        if process.startswith("detect"):
            return "detect"
        return process if process == "api" else None

    def respawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start a process again exactly as it was started (same client id, config)."""
        return self.spawn(name, *self.commands[name])

    def ingest_names(self) -> list[str]:
        return ["ingest" if i == 0 else f"ingest-{i + 1}" for i in range(self.ingest_workers)]

    def start_processes(self) -> None:
        for i, name in enumerate(self.ingest_names()):
            self.spawn(name, "ingest", "--client-id", f"ingest-{i + 1}")
        timing = (
            *("--overdue-after", str(self.overdue_after_s)),
            *("--missing-after", str(self.missing_after_s)),
        )
        if not self.detect_shards:
            self.spawn("detect", "detect", *timing)
        for i, sites in enumerate(self.detect_shards):
            self.spawn(f"detect-{i + 1}", "detect", *timing, "--sites", ",".join(sites))
        rate = (
            ("--rate", str(self.api_rate), "--burst", str(self.api_rate)) if self.api_rate else ()
        )
        self.spawn("api", "api", "--port", str(self.api_port), *rate)
        self.spawn("notify", *self.notify_args())
        # Escalations, overdue complaints, daily reports, and the manager page's figures
        # (issue 16), those every 30 s: the pipeline's data is small and changes fast.
        self.spawn("quality", "quality", "--tick", "5", "--figures-every", "30")
        # The simulator makes the ports, then waits for the clock file: pyserial drops
        # what a port holds when it opens it, so playing starts only once every agent
        # has opened its devices.
        clock_file = self.workdir / "clock.json"
        clock_file.unlink(missing_ok=True)
        if self.spawn_sim:
            self._spawn_sim(clock_file)
        devices = {rp.device for rp in self.scenario.read_points}
        self._wait_for(
            lambda: all((self.port_dir / d).exists() for d in devices), "the virtual ports"
        )
        for i, name in enumerate(self.agents()):
            process = "edge" if i == 0 else f"edge-{self.agents()[name]}"
            config = self.workdir / self.agent_config(i, name)
            self.spawn(process, "edge", "--config", str(config))
        self.wait_devices_connected(devices)
        # Scenario time 0 just ahead; the standards and sort plans in the database and
        # the ground truth follow the same clock.
        # `site apply` is a process of its own: scenario time 0 waits for it, or the
        # first reads would be played late, in a burst.
        ahead = SITE_APPLY_S if self.site_files else 1.0
        self.clock = PlaybackClock(datetime.now(UTC) + timedelta(seconds=ahead), self.speed)
        if self.site_files:
            self.apply_site_files()
            if datetime.now(UTC) > self.clock.start:
                raise ServiceError(f"site apply took over {ahead:g} s; playback would start late")
        else:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                load_standards(conn, self.scenario.reference_data(self.clock))
        (self.workdir / "truth.jsonl").write_text(
            self.scenario.truth_lines(self.clock.start, self.clock.speed)
        )
        self.clock.save(clock_file)

    def apply_site_files(self) -> None:
        """The scenario's centres as site files, put in force by `parceltrack site apply`."""
        from firmware_sim.sitefiles import write_site_files

        files = write_site_files(self.scenario, self.workdir / "sites", self.clock)
        with (self.logs / "site-apply.log").open("ab") as out:
            subprocess.run(
                [sys.executable, "-m", "composition.cli", "site", "apply", *map(str, files)],
                env=self.env(None), stdout=out, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip

    def notify_args(self) -> list[str]:
        """The delivery engine and customer notifier (issue 15): links point at the API."""
        args = ["notify", "--public-url", self.api_url, "--hold-down", str(self.notify_hold_down_s),
                "--allow-private-targets"]  # fmt: skip
        return [*args, "--smtp", self.smtp_url] if self.smtp_url else args

    def _spawn_sim(self, clock_file: Path) -> None:
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
            "--clock-from",
            str(clock_file),
            "--quiet",
        )

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"{what} were not ready within {timeout:.0f}s")
            time.sleep(0.1)

    def wait_devices_connected(self, devices: set[str], timeout: float = 60.0) -> None:
        """Until each agent's health reports every device's port open."""
        # Health is what ingest reads: the pipeline watches with ingest's credentials.
        wait_devices_connected(self.broker("ingest"), devices, timeout, self.check_alive)

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
        end_process(self.processes.pop(name, None), 15, sig)

    def stop(self, keep_files: bool = False) -> None:
        # Producers first, so what is in flight can still land.
        edges = [n for n in self.processes if n.startswith("edge")]
        for name in ("sim", *edges, "ingest", "detect", "quality", "notify", "api"):
            self.stop_process(name)
        for name in list(self.processes):
            self.stop_process(name)
        for broker in self.site_mosquittos.values():
            broker.stop()
        self.mosquitto.stop()
        if self.standby is not None:
            self.standby.stop()
        self.postgres.stop()
        if not keep_files:
            for broker in self.site_mosquittos.values():
                broker.destroy()
            if self.standby is not None:
                self.standby.destroy()
            self.mosquitto.destroy()
            self.postgres.destroy()
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

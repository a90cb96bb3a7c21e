"""RFID readers and scanners on real ptys and TCP ports, through the real agent to a
real Mosquitto; and the agent's durability when its process is killed."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from pydantic import BaseModel

from composition.services import PrivateMosquitto
from edge.agent import run_agent
from edge.config import AgentConfig, load_agent_config
from firmware_sim.barcode import ScannerFraming, code128, frame
from firmware_sim.faults import FaultPlan, FaultWindow
from firmware_sim.pty import VirtualSerialPort
from firmware_sim.rfid import TagField, VirtualMercury, VirtualR2000
from firmware_sim.transport import PtyTransport, TcpTransport
from ingest.worker import IngestSettings, IngestWorker
from parceltrack.config import BrokerAddress
from parceltrack.identifiers import S10
from parceltrack.wire import decode_batch
from tests.integration.test_edge_pty import Collector
from tests.waiting import holds, wait_until

ROOT = Path(__file__).resolve().parents[2]
SSCC_EPC = "3174257BF4499602D2000000"
AgentRunner = Callable[[AgentConfig], tuple[threading.Event, threading.Thread]]
TAGS = [SSCC_EPC, "3074257BF7194E4000001A85", "350000001000000200000003"]


def _device(id_: str, protocol: str, port: str, extra: str = "") -> str:
    return f"""
[[devices]]
id = "{id_}"
protocol = "{protocol}"
port = "{port}"
read_point = "LHR1-{id_.upper()}"
{extra}
"""


def _config(tmp_path: Path, devices: str, agent_extra: str = "") -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[agent]\nid = "agent-r"\nsite = "LHR1"\nhealth_interval_s = 0.3\n{agent_extra}\n'
        + devices
    )
    return load_agent_config(path)


@pytest.fixture
def agent_runner(mqtt_server: PrivateMosquitto) -> Iterator[AgentRunner]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(config: AgentConfig) -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        thread = threading.Thread(
            target=run_agent, args=(config, BrokerAddress.from_url(mqtt_server.url), stop)
        )
        thread.start()
        stops.append((stop, thread))
        return stop, thread

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)


def _fields(event: object) -> dict[str, object]:
    """An event's fields, whichever lane decoded it: decode_batch gives msgspec's
    Struct, or pydantic's model when the payload needs it (a number with 7+ decimals,
    an escape), which a pass's figures decide from run to run."""
    if isinstance(event, BaseModel):
        return event.model_dump()
    return msgspec.structs.asdict(event)  # type: ignore[call-overload]


def _seen(collector: Collector, device: str) -> list[dict[str, object]]:
    out = []
    for topic, payload in list(collector.batches):
        batch = decode_batch(topic, payload)
        if batch.device == device:
            out.extend(_fields(e) for e in batch.events if e.kind == "seen")
    return out


def _health(collector: Collector, device: str) -> dict[str, object]:
    found = [h for h in list(collector.health) if h["device"] == device]
    return found[-1] if found else {}


def test_mercury_on_a_pty_and_r2000_on_a_socket_give_one_seen_event_per_pass(
    tmp_path: Path, mqtt_server: PrivateMosquitto, agent_runner: AgentRunner
) -> None:
    """Each tag passing each gate arrives once as a smoothed pass with its reads, peak
    RSSI, EPC URI and, at the two-antenna gate, its direction."""
    mer = VirtualMercury(PtyTransport(tmp_path / "dev" / "gate-m"), TagField((1, 2)))
    r2k = VirtualR2000(TcpTransport(), TagField((1, 2)))
    gate = '[devices.smoothing]\nquiet_s = 0.4\nantenna_positions = { "1" = 0.0, "2" = 1.0 }'
    devices = _device(
        "gate-m", "mercury", mer.url, "[devices.mercury]\nantennas = [1, 2]\n" + gate
    ) + _device("gate-r", "r2000", r2k.url, "[devices.r2000]\nantennas = [1, 2]\n" + gate)
    collector = Collector(mqtt_server.url)
    try:
        stop, agent = agent_runner(_config(tmp_path, devices))
        wait_until(lambda: mer.streaming and r2k.rounds > 0, 15, "both readers inventorying")
        for epc in TAGS:
            mer.present(epc, 1.0)
            r2k.present(epc, 1.5)
        wait_until(
            lambda: len(_seen(collector, "gate-m")) >= 3 and len(_seen(collector, "gate-r")) >= 3,
            15,
            "three passes at each gate",
        )
        # Kept: what is checked is that nothing more comes. A second pass event per tag
        # would have closed and arrived within this time (quiet_s 0.4 and a health cycle).
        time.sleep(0.8)
        for device in ("gate-m", "gate-r"):
            seen = _seen(collector, device)
            assert sorted(e["code"] for e in seen) == sorted(TAGS)
            by_code = {e["code"]: e for e in seen}
            assert by_code[SSCC_EPC]["epc"] == "urn:epc:id:sscc:0614141.1234567890"
            assert all(e["read_count"] > 1 and e["direction"] == "in" for e in seen)  # type: ignore[operator]
            assert all(e["first_seen"] < e["last_seen"] for e in seen)  # type: ignore[operator]
        wait_until(
            lambda: _health(collector, "gate-m").get("raw_reads", 0) > 3,  # type: ignore[operator]
            15,
            "raw reads in gate-m's health",
        )
        wait_until(
            lambda: _health(collector, "gate-m").get("passes_closed") == 3,
            15,
            "three closed passes in gate-m's health",
        )
        health = _health(collector, "gate-m")
        assert health["firmware"] == "01.09.00.03" and health["connected"] is True
        assert health["raw_reads"] > health["passes_closed"]  # type: ignore[operator]
        assert mer.region == 0x08 and mer.antennas == (1, 2) and mer.power_cdbm == 2700
        stop.set()
        agent.join(10)
        wait_until(lambda: not mer.streaming, 5, "the agent to stop the inventory")
    finally:
        collector.close()
        mer.close()
        r2k.close()


@pytest.mark.parametrize(
    ("device_class", "protocol"),
    [(VirtualMercury, "mercury"), (VirtualR2000, "r2000")],
    ids=["mercury", "r2000"],
)
def test_faulty_reader_on_a_pty_is_counted_and_reading_goes_on(
    tmp_path: Path,
    mqtt_server: PrivateMosquitto,
    agent_runner: AgentRunner,
    device_class: type[VirtualMercury] | type[VirtualR2000],
    protocol: str,
) -> None:
    """Garbled bytes, bad checksums, truncated frames and duplicate reads are counted
    as bad or absorbed; every tag still arrives as exactly one pass."""
    faults = FaultPlan(
        garble_rate=0.1, bad_checksum_rate=0.1, truncate_rate=0.1, duplicate_rate=0.1, seed=7
    )
    dev = device_class(PtyTransport(tmp_path / "dev" / "gate-f"), TagField((1,)), faults)
    collector = Collector(mqtt_server.url)
    smoothing = "[devices.smoothing]\nquiet_s = 0.4"
    try:
        agent_runner(_config(tmp_path, _device("gate-f", protocol, dev.url, smoothing)))
        wait_until(lambda: dev.counters.commands >= 3, 15, "the driver's set-up commands")
        for epc in TAGS:
            dev.present(epc, 1.5)
        wait_until(lambda: len(_seen(collector, "gate-f")) >= 3, 15, "three passes")
        time.sleep(0.6)  # kept: an extra pass event (a duplicate) would arrive within this
        assert sorted(e["code"] for e in _seen(collector, "gate-f")) == sorted(TAGS)
        wait_until(
            lambda: _health(collector, "gate-f").get("frames_bad", 0) > 0,  # type: ignore[operator]
            15,
            "bad frames counted in the health",
        )
        assert dev.counters.faults.garbled > 0 and dev.counters.faults.truncated > 0
    finally:
        collector.close()
        dev.close()


def test_silent_reader_is_woken_by_the_driver(
    tmp_path: Path, mqtt_server: PrivateMosquitto, agent_runner: AgentRunner
) -> None:
    """A reader that goes silent on schedule is noticed (timeouts in health) and set up
    again, after which its reads flow."""
    faults = FaultPlan(schedule=(FaultWindow(1.0, 4.0, "silent"),))
    mer = VirtualMercury(PtyTransport(tmp_path / "dev" / "gate-s"), TagField((1,)), faults)
    extra = "[devices.mercury]\nsilence_timeout_s = 1.5\n[devices.smoothing]\nquiet_s = 0.3"
    collector = Collector(mqtt_server.url)
    try:
        agent_runner(_config(tmp_path, _device("gate-s", "mercury", mer.url, extra)))
        wait_until(
            lambda: _health(collector, "gate-s").get("timeouts", 0) >= 1,  # type: ignore[operator]
            15,
            "a timeout in the health",
        )
        # Set up again by the driver: inventory restarted after the silent window.
        wait_until(
            lambda: mer.streaming and mer._stream_start - mer._started > 4.0,
            15,
            "the inventory restarted after the silent window",
        )
        mer.present(SSCC_EPC, 0.6)
        wait_until(lambda: len(_seen(collector, "gate-s")) == 1, 15, "one pass")
    finally:
        collector.close()
        mer.close()


def test_unplugged_reader_is_reopened_while_the_scanner_keeps_working(
    tmp_path: Path, mqtt_server: PrivateMosquitto, agent_runner: AgentRunner
) -> None:
    """While a reader's port is gone the scanner's reads still flow; once the port is
    back the agent reopens it, sets the reader up again and its reads flow too."""
    mer = VirtualMercury(PtyTransport(tmp_path / "dev" / "gate-u"), TagField((1,)))
    scanner = VirtualSerialPort(tmp_path / "dev" / "scan-u")
    devices = _device("gate-u", "mercury", mer.url, "[devices.smoothing]\nquiet_s = 0.3") + _device(
        "scan-u", "barcode", str(scanner.path)
    )
    collector = Collector(mqtt_server.url)
    try:
        agent_runner(_config(tmp_path, devices))
        wait_until(
            lambda: mer.streaming and _health(collector, "scan-u").get("connected") is True,
            15,
            "the reader inventorying and the scanner's port open",
        )
        mer.unplug()
        assert not mer.transport.plugged and not (tmp_path / "dev" / "gate-u").exists()
        wait_until(
            lambda: _health(collector, "gate-u").get("connected") is False,
            15,
            "the reader's port reported lost",
        )
        scanner.write(frame([code128("RR473124829GB")], ScannerFraming()))
        wait_until(lambda: "RR473124829GB" in collector.events(), 15, "the scanner's read")
        mer.replug()
        wait_until(lambda: mer.streaming, 15, "the reader set up again")
        mer.present(SSCC_EPC, 0.5)
        wait_until(lambda: len(_seen(collector, "gate-u")) == 1, 15, "one pass")
        wait_until(
            lambda: _health(collector, "gate-u").get("reopens", 0) >= 1,  # type: ignore[operator]
            15,
            "a reopen in the health",
        )
    finally:
        collector.close()
        mer.close()
        scanner.close()


def _outbox_codes(path: Path) -> set[str]:
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(path, timeout=5) as db:
            rows = db.execute("SELECT event FROM outbox").fetchall()
    except sqlite3.OperationalError:
        return set()
    return {json.loads(r[0])["code"] for r in rows}


def _delivered(collector: Collector) -> tuple[dict[str, str], int]:
    """Event id -> code of every delivered event (deduplicated), and the raw count."""
    ids: dict[str, str] = {}
    raw = 0
    for topic, payload in list(collector.batches):
        for e in decode_batch(topic, payload).events:
            ids[e.id] = e.code or ""
            raw += 1
    return ids, raw


def _start_agent(config_path: Path, broker_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PARCELTRACK_MQTT_URL": broker_url}
    return subprocess.Popen(
        [sys.executable, "-m", "composition.cli", "edge", "--config", str(config_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(config_path.parent / "agent.log").open("ab"),
    )


def test_nothing_is_lost_across_a_broker_outage_and_kill_9_of_the_agent(
    tmp_path: Path, services_dir: Path, db_dsn: str
) -> None:
    """Reads taken while the broker is down survive two kill -9s of the agent process
    (one of them mid-replay): every read is delivered and committed, each once after
    dedupe by id, and the ingest's receipts empty the outbox."""
    broker = PrivateMosquitto(services_dir / f"mq-kill-{time.monotonic_ns()}")
    scanner = VirtualSerialPort(tmp_path / "dev" / "scan-k")
    config = _config(
        tmp_path,
        _device("scan-k", "barcode", str(scanner.path)),
        "replay_rate = 150.0\nbatch_max_events = 20",
    )
    config_path = tmp_path / "agent.toml"
    codes = [str(S10.make("CP", 20_000_000 + n, "GB")) for n in range(300)]
    agent = _start_agent(config_path, broker.url)
    collector: Collector | None = None
    try:
        # Opening a port flushes its input: write only once the agent holds the port.
        wait_until(lambda: holds(agent.pid, scanner.path), 30, "the agent's port open")
        for code in codes:
            scanner.write(frame([code128(code)], ScannerFraming()))
        wait_until(
            lambda: _outbox_codes(config.outbox_path) == set(codes), 30, "every read in the outbox"
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        broker.start()
        collector = Collector(broker.url)
        ingest = IngestWorker(
            IngestSettings(db_dsn, BrokerAddress.from_url(broker.url), client_id="ingest-k")
        )
        threading.Thread(target=ingest.run, daemon=True).start()
        agent = _start_agent(config_path, broker.url)
        # Replay is paced at 150 events/s: kill again once part of it has arrived.
        wait_until(lambda: len(_delivered(collector)[0]) >= 40, 30, "part of the replay")  # type: ignore[arg-type]
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert len(_delivered(collector)[0]) < len(codes)
        agent = _start_agent(config_path, broker.url)
        wait_until(lambda: len(_delivered(collector)[0]) >= len(codes), 60, "every read")  # type: ignore[arg-type]
        wait_until(lambda: not _outbox_codes(config.outbox_path), 20, "an empty outbox")
        ids, _raw = _delivered(collector)
        assert sorted(ids.values()) == sorted(codes)  # each read once after dedupe by id
        with psycopg.connect(db_dsn) as conn:
            stored = conn.execute("SELECT code FROM scans").fetchall()
        assert sorted(c for (c,) in stored) == sorted(codes)  # committed once each
        ingest.stop()
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        if collector is not None:
            collector.close()
        scanner.close()
        broker.destroy()


def test_backlog_replay_is_paced_and_does_not_starve_live_events(
    tmp_path: Path, mqtt_server: PrivateMosquitto
) -> None:
    """With a backlog waiting, new (live) events are published at once while the
    backlog trickles out at the configured replay rate, oldest first."""
    from datetime import UTC, datetime

    from edge.agent import Publisher
    from edge.outbox import Outbox
    from parceltrack.events import EventKind, ScanEvent

    config = _config(
        tmp_path,
        _device("scan-b", "barcode", "/dev/null"),
        "replay_rate = 400.0\nbatch_max_events = 50",
    )

    def events(n: int, start: int) -> list[ScanEvent]:
        now = datetime.now(UTC)
        return [
            ScanEvent("scan-b", 1, s, now, "LHR1", "LHR1-SCAN-B", EventKind.READ, f"C{s}")
            for s in range(start, start + n)
        ]

    outbox = Outbox(config.outbox_path)
    outbox.append(events(1000, 0))  # the backlog: 2.5 s at 400 events/s
    collector = Collector(mqtt_server.url)
    publisher = Publisher(config, BrokerAddress.from_url(mqtt_server.url), outbox)
    publisher.start()
    try:
        assert publisher.client.wait_connected()
        wait_until(lambda: publisher.online, 15, "the publisher online")
        started = time.monotonic()
        publisher.pump()  # connected: what waits now is backlog
        outbox.append(events(10, 1000))  # live

        def delivered() -> list[int]:
            return [e.seq for t, p in list(collector.batches) for e in decode_batch(t, p).events]

        while time.monotonic() - started < 20 and len(set(delivered())) < 1010:
            publisher.pump()
            time.sleep(0.01)
        seqs = delivered()
        elapsed = time.monotonic() - started
        assert sorted(set(seqs)) == list(range(1010))
        live_at = min(seqs.index(s) for s in range(1000, 1010))
        assert live_at < 300  # live events went out long before the backlog was done
        backlog = [s for s in seqs if s < 1000]
        assert backlog == sorted(backlog)  # oldest first
        assert elapsed > 1.5  # paced: 1000 events at 400/s cannot all go at once
    finally:
        publisher.close()
        collector.close()
        outbox.close()


def test_agent_with_a_corrupt_outbox_moves_it_aside_and_keeps_reading(
    tmp_path: Path, mqtt_server: PrivateMosquitto, agent_runner: AgentRunner
) -> None:
    """An agent whose outbox file is garbage starts anyway, reports where it moved the
    old file in its health, and delivers new reads."""
    scanner = VirtualSerialPort(tmp_path / "dev" / "scan-c")
    config = _config(tmp_path, _device("scan-c", "barcode", str(scanner.path)))
    config.outbox_path.write_bytes(b"\x00garbage, not SQLite\xff" * 300)
    collector = Collector(mqtt_server.url)
    try:
        agent_runner(config)
        wait_until(
            lambda: _health(collector, "scan-c").get("connected") is True, 15, "the port open"
        )
        moved = _health(collector, "scan-c")["outbox_corrupt_moved_to"]
        assert moved and Path(str(moved)).read_bytes().startswith(b"\x00garbage")
        scanner.write(frame([code128("RR473124829GB")], ScannerFraming()))
        wait_until(lambda: "RR473124829GB" in collector.events(), 15, "the read delivered")
    finally:
        collector.close()
        scanner.close()


class Rfc2217Server:
    """A minimal RFC 2217 serial server in front of a pty (as pyserial's example
    server does), standing in for a Moxa/Lantronix box on the network."""

    def __init__(self, device_path: str) -> None:
        import serial

        class PtyLine(serial.Serial):  # type: ignore[misc]
            """A pty has no modem lines: report them idle, as a bare UART would."""

            cts = dsr = ri = cd = False

            def _update_rts_state(self) -> None:
                pass

            def _update_dtr_state(self) -> None:
                pass

        self._serial = PtyLine(device_path, timeout=0.05)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rfc2217://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        import serial.rfc2217

        class Wire:  # PortManager answers negotiation through .write()
            def write(self, data: bytes) -> None:
                conn.sendall(data)

        conn.settimeout(0.05)
        manager = serial.rfc2217.PortManager(self._serial, Wire())

        def to_network() -> None:
            while not self._stop.is_set():
                data = self._serial.read(self._serial.in_waiting or 1)
                if data:
                    conn.sendall(b"".join(manager.escape(data)))

        pump = threading.Thread(target=to_network, daemon=True)
        self._threads.append(pump)
        pump.start()
        while not self._stop.is_set():
            try:
                data = conn.recv(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self._serial.write(b"".join(manager.filter(data)))

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:  # both poll the stop flag every 50 ms
            thread.join(2)
        self._serial.close()


def test_reader_behind_an_rfc2217_serial_server(
    tmp_path: Path, mqtt_server: PrivateMosquitto, agent_runner: AgentRunner
) -> None:
    """An rfc2217:// port works like a local one: the same driver, no special case."""
    mer = VirtualMercury(PtyTransport(tmp_path / "dev" / "gate-n"), TagField((1,)))
    server = Rfc2217Server(mer.url)
    collector = Collector(mqtt_server.url)
    try:
        smoothing = "[devices.smoothing]\nquiet_s = 0.3"
        agent_runner(_config(tmp_path, _device("gate-n", "mercury", server.url, smoothing)))
        wait_until(lambda: mer.streaming, 15, "the reader inventorying")
        mer.present(SSCC_EPC, 0.6)
        wait_until(
            lambda: [e["code"] for e in _seen(collector, "gate-n")] == [SSCC_EPC],
            15,
            "the tag's one pass",
        )
    finally:
        collector.close()
        server.close()
        mer.close()

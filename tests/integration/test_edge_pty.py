import json
import logging
import threading
import time
from pathlib import Path

import pytest

from composition.services import PrivateMosquitto
from edge.agent import run_agent
from edge.config import load_agent_config
from firmware_sim.barcode import ScannerFraming, code128, frame, noread_frame
from firmware_sim.pty import VirtualSerialPort
from ingest.worker import IngestSettings, IngestWorker
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import Message, MqttClient
from parceltrack.wire import decode_batch
from tests.waiting import wait_until


def _agent_toml(tmp_path: Path, port: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[agent]
id = "agent-t"
site = "LHR1"
health_interval_s = 0.5

[[devices]]
id = "scan-1"
protocol = "barcode"
port = "{port}"
read_point = "LHR1-TUN1"
""")
    return path


class Collector:
    def __init__(self, url: str) -> None:
        self.batches: list[tuple[str, bytes]] = []
        self.health: list[dict[str, object]] = []
        self.status: list[dict[str, object]] = []
        self.client = MqttClient(f"collector-{time.monotonic_ns()}", BrokerAddress.from_url(url))
        self.client.on_message(self._on_message)
        subscribed = threading.Event()
        self.client.on_subscribe(lambda _reasons: subscribed.set())
        self.client.start()
        assert self.client.wait_connected()
        self.client.subscribe(f"{topics.PREFIX}/#", qos=1)
        wait_until(subscribed.is_set, 10, "the collector's SUBACK")

    def _on_message(self, msg: Message) -> None:
        if msg.topic.endswith("/events"):
            self.batches.append((msg.topic, msg.payload))
        elif msg.topic.endswith("/health"):
            self.health.append(json.loads(msg.payload))
        elif msg.topic.endswith("/status"):
            self.status.append(json.loads(msg.payload))

    def events(self) -> list[str | None]:
        return [e.tracking_id or e.kind for t, p in self.batches for e in decode_batch(t, p).events]

    def close(self) -> None:
        self.client.stop()


def test_scanner_on_a_real_pty_reaches_mqtt_as_events(
    tmp_path: Path, mqtt_server: PrivateMosquitto
) -> None:
    """Frames written on a pty by the simulator arrive on MQTT as v1 batches, in order;
    without an ingest no receipt comes, so they stay, counted as the receipt lag."""
    port = VirtualSerialPort(tmp_path / "dev" / "scan-1")
    collector = Collector(mqtt_server.url)
    stop = threading.Event()
    config = load_agent_config(_agent_toml(tmp_path, port.path))
    agent = threading.Thread(
        target=run_agent, args=(config, BrokerAddress.from_url(mqtt_server.url), stop)
    )
    agent.start()
    try:
        # Opening a port flushes its input (pyserial, like real hosts): wait until open.
        wait_until(lambda: any(h["connected"] for h in collector.health), 10, "the port open")
        framing = ScannerFraming()
        port.write(frame([code128("RR473124829GB")], framing))
        port.write(noread_frame(framing) + b"\x00\xffgarbage\r\n")
        port.write(frame([code128("EE123456785CN")], framing))
        wait_until(lambda: len(collector.events()) >= 3, 10, "three events")
        assert collector.events() == ["RR473124829GB", "noread", "EE123456785CN"]
        [topic] = {t for t, _ in collector.batches}
        assert topic == topics.events("LHR1", "scan-1")
        wait_until(
            lambda: any(h.get("frames_bad") == 1 for h in collector.health),
            10,
            "a health message counting the bad frame",
        )
        assert any(h["frames_bad"] == 1 and h["reads"] == 2 for h in collector.health)
        assert {"state": "online"}.items() <= collector.status[-1].items()
        # No ingest here, so no commit receipt: the broker's PUBACK only marks the
        # events acknowledged, and they stay in the outbox.
        wait_until(
            lambda: _outbox_rows(config.outbox_path, "acked IS NULL") == 0, 10, "the PUBACKs"
        )
        assert _outbox_rows(config.outbox_path) == 3
        # ... and the health reports them as the receipt lag.
        wait_until(lambda: any(h.get("unreceipted") == 3 for h in collector.health), 10, "the lag")
        lagging = [h for h in collector.health if h.get("unreceipted") == 3]
        assert all(float(str(h["receipt_lag_s"])) >= 0 for h in lagging)
    finally:
        stop.set()
        agent.join(10)
        collector.close()
        port.close()


def _outbox_rows(path: Path, where: str = "1 = 1") -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM outbox WHERE {where}").fetchone()[0])


def test_events_wait_in_the_outbox_while_the_broker_is_down(
    tmp_path: Path, services_dir: Path, db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With no broker, reads stay in the outbox; when it comes up they are all delivered,
    committed by a real ingest worker, and its receipts empty the outbox."""
    broker = PrivateMosquitto(services_dir / f"mq-outage-{time.monotonic_ns()}")
    port = VirtualSerialPort(tmp_path / "dev" / "scan-1")
    config = load_agent_config(_agent_toml(tmp_path, port.path))
    stop = threading.Event()
    agent = threading.Thread(
        target=run_agent, args=(config, BrokerAddress.from_url(broker.url), stop)
    )
    caplog.set_level(logging.INFO, logger="edge.agent")
    agent.start()
    try:
        # Opening a port flushes its input: write only once the agent has opened it.
        wait_until(lambda: "device scan-1: opened" in caplog.text, 10, "the agent's port open")
        for n in range(20):
            port.write(frame([code128("RR473124829GB")], ScannerFraming()))
            del n
        wait_until(
            lambda: config.outbox_path.exists() and _outbox_rows(config.outbox_path) == 20,
            10,
            "20 events in the outbox",
        )
        broker.start()
        collector = Collector(broker.url)
        ingest = IngestWorker(
            IngestSettings(db_dsn, BrokerAddress.from_url(broker.url), client_id="ingest-pty")
        )
        worker = threading.Thread(target=ingest.run, daemon=True)
        worker.start()
        wait_until(lambda: len(collector.events()) >= 20, 20, "20 events delivered")
        assert len(collector.events()) == 20
        wait_until(lambda: _outbox_rows(config.outbox_path) == 0, 20, "an empty outbox")
        assert ingest.accounts.events_written == 20
        collector.close()
        ingest.stop()
        worker.join(15)
    finally:
        stop.set()
        agent.join(10)
        port.close()
        broker.destroy()

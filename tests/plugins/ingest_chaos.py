"""Helpers for the ingest chaos tests: a flooding publisher, ingest subprocesses, counts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from composition.services import end_process, free_port
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.mqtt import MqttClient
from parceltrack.wire import encode_batch
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def scan_batch(device: str, boot: int, seqs: range, ts: datetime) -> tuple[str, bytes]:
    events = [
        ScanEvent(
            device=device, boot=boot, seq=s, ts=ts, site="LHR1", read_point="LHR1-TUN1",
            kind=EventKind.READ, code="RR473124829GB", tracking_id="RR473124829GB",
        )
        for s in seqs
    ]  # fmt: skip
    return topics.events("LHR1", device), encode_batch("LHR1", device, "agent-1", events)


class Flood:
    """Publishes `messages` batches of `per_message` events at QoS 1, every 7th a replay.

    It runs in a thread, survives broker restarts (paho resends unacked messages),
    and knows how many distinct events it published.
    """

    def __init__(self, url: str, messages: int = 300, per_message: int = 100) -> None:
        self.url, self.messages, self.per_message = url, messages, per_message
        self.distinct = messages * per_message
        self.done = threading.Event()
        self.resumed = threading.Event()  # cleared: hold new messages back
        self.resumed.set()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Flood:
        self._thread.start()
        return self

    def _run(self) -> None:
        client = MqttClient(f"flood-{time.monotonic_ns()}", BrokerAddress.from_url(self.url),
                             persistent=True)  # fmt: skip
        client.start()
        assert client.wait_connected(30)
        ts = datetime.now(UTC)
        for m in range(self.messages):
            seqs = range(m * self.per_message, (m + 1) * self.per_message)
            _send(client, *scan_batch("scan-1", 7, seqs, ts), self.resumed)
            if m % 7 == 6:  # an outbox replay of the previous batch
                prev = range((m - 1) * self.per_message, m * self.per_message)
                _send(client, *scan_batch("scan-1", 7, prev, ts), self.resumed)
            self.sent = m + 1
        client.stop()
        self.done.set()


def _send(client: MqttClient, topic: str, payload: bytes, resumed: threading.Event) -> None:
    """Publish at QoS 1 until the broker acknowledges, as an edge outbox does."""
    while True:
        if not client.is_connected() or not resumed.is_set():
            time.sleep(0.05)
            continue
        info = client.publish(topic, payload, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(10)
        if info.is_published():
            return


def count_scans(dsn: str) -> tuple[int, int]:
    """(rows, distinct event ids) in scans; (-1, -1) while the database is away."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM scans").fetchone()
    except psycopg.OperationalError:
        return (-1, -1)
    assert row is not None
    return (int(row[0]), int(row[1]))


class IngestProcess:
    """`python -m composition.cli ingest` as a subprocess, with its metrics port."""

    def __init__(self, dsn: str, url: str, client_id: str, log: Path) -> None:
        self.dsn, self.url, self.client_id, self.log = dsn, url, client_id, log
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        env = dict(os.environ, PARCELTRACK_DSN=self.dsn, PARCELTRACK_MQTT_URL=self.url)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "composition.cli", "ingest", "--client-id",
                 self.client_id, "--metrics-port", str(self.metrics_port),
                 "--report-every", "1"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(lambda: self.metrics() is not None, 30, "the ingest's metrics endpoint")
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        end_process(self.process, 20)

    def metrics(self) -> dict[str, float] | None:
        """Prometheus samples by name and labels, or None when not serving (yet)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


def identities_hold(m: dict[str, float], worker: str) -> bool:
    """received = committed + dead-lettered + in flight; events received = written + dup."""

    def get(key: str) -> float:
        return m.get(key, 0.0)

    received = get('parceltrack_ingest_messages_total{outcome="received"}')
    committed = get('parceltrack_ingest_messages_total{outcome="committed"}')
    dead = get('parceltrack_ingest_messages_total{outcome="dead_lettered"}')
    in_flight = get(f'parceltrack_ingest_messages_in_flight{{worker="{worker}"}}')
    ev_in = get('parceltrack_ingest_events_total{outcome="received"}')
    ev_written = get('parceltrack_ingest_events_total{outcome="written"}')
    ev_dup = get('parceltrack_ingest_events_total{outcome="duplicate"}')
    return received == committed + dead + in_flight and ev_in == ev_written + ev_dup

"""The edge agent: one reader thread per serial device, one publisher draining the outbox."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import serial

from edge.barcode import BarcodeFramer, BarcodeRead, BarcodeSettings
from edge.config import AgentConfig, DeviceConfig
from edge.outbox import Outbox, Pending
from parceltrack import topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.mqtt import connect, make_client

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    connected: bool = False
    frames_ok: int = 0
    frames_bad: int = 0
    reads: int = 0
    noreads: int = 0
    reopens: int = 0
    last_read: datetime | None = None


@dataclass
class DeviceReader:
    """Reads one device's port, turns frames into events, appends them to the outbox."""

    device: DeviceConfig
    site: str
    boot: int
    outbox: Outbox
    stop: threading.Event
    health: DeviceHealth = field(default_factory=DeviceHealth)

    def __post_init__(self) -> None:
        b = self.device.barcode
        self._framer = BarcodeFramer(
            BarcodeSettings(
                header=b.header.encode(), terminator=b.terminator.encode(), aim=b.aim,
                noread=b.noread, separator=b.separator,
            )
        )  # fmt: skip
        self._seq = 0

    def run(self) -> None:
        backoff = 0.2
        while not self.stop.is_set():
            try:
                port = serial.serial_for_url(
                    self.device.port, baudrate=self.device.baudrate, timeout=0.2
                )
            except (serial.SerialException, OSError) as exc:
                log.warning(
                    "device %s: cannot open %s (%s); retrying in %.1fs",
                    self.device.id,
                    self.device.port,
                    exc,
                    backoff,
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.health.connected = True
            log.info("device %s: opened %s", self.device.id, self.device.port)
            try:
                self._read_until_gone(port)
            finally:
                port.close()
                self.health.connected = False
            if not self.stop.is_set():
                self.health.reopens += 1

    def _read_until_gone(self, port: serial.Serial) -> None:
        while not self.stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                log.warning("device %s: port lost (%s)", self.device.id, exc)
                return
            if data:
                self._handle(self._framer.feed(data))

    def _handle(self, reads: list[BarcodeRead]) -> None:
        self.health.frames_ok = self._framer.frames_ok
        self.health.frames_bad = self._framer.frames_bad
        if not reads:
            return
        now = datetime.now(UTC)
        events = []
        for read in reads:
            events.append(
                ScanEvent(
                    device=self.device.id, boot=self.boot, seq=self._seq, ts=now,
                    site=self.site, read_point=self.device.read_point,
                    kind=EventKind.NOREAD if read.is_noread else EventKind.READ,
                    code=read.code, symbology=read.symbology, tracking_id=read.tracking_id,
                )
            )  # fmt: skip
            self._seq += 1
        self.outbox.append(events)
        self.health.reads += sum(1 for r in reads if not r.is_noread)
        self.health.noreads += sum(1 for r in reads if r.is_noread)
        self.health.last_read = now


class Publisher:
    """Drains the outbox oldest first; a batch leaves the outbox only on its PUBACK."""

    def __init__(self, config: AgentConfig, broker: BrokerAddress, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.max_in_flight = 64
        # PUBACKs arrive on paho's thread, which holds paho's lock while calling back;
        # so the callback only queues the mid and pump() (one thread) does the rest.
        self._acked_mids: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, list[int]] = {}
        self._cursor = 0
        self.published = 0
        site, agent = config.agent.site, config.agent.id
        self._status_topic = topics.agent_status(site, agent)
        self.client = make_client(f"agent-{agent}", broker)
        self.client.will_set(self._status_topic, json.dumps({"state": "offline"}), 1, True)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        log.info("agent %s connected to broker (%s)", self.config.agent.id, rc)
        status = {"state": "online", "since": datetime.now(UTC).isoformat()}
        client.publish(self._status_topic, json.dumps(status), qos=1, retain=True)

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object = None
    ) -> None:
        self._acked_mids.put(mid)

    def start(self) -> None:
        connect(self.client)
        self.client.loop_start()

    def pump(self) -> int:
        """Publish what fits in flight; delete what the broker acknowledged."""
        self._settle_acks()
        room = self.max_in_flight - len(self._in_flight)
        sent = 0
        if room <= 0:
            return sent
        pending = self.outbox.oldest(self._cursor, room * self.config.agent.batch_max_events)
        for device, group in _by_device(pending).items():
            for i in range(0, len(group), self.config.agent.batch_max_events):
                chunk = group[i : i + self.config.agent.batch_max_events]
                payload = wire.encode_batch(
                    self.config.agent.site,
                    device,
                    self.config.agent.id,
                    [p.event for p in chunk],
                )
                info = self.client.publish(
                    topics.events(self.config.agent.site, device), payload, qos=1
                )
                self._in_flight[info.mid] = [p.row_id for p in chunk]
                sent += len(chunk)
        if pending:
            self._cursor = pending[-1].row_id
        self.published += sent
        return sent

    def _settle_acks(self) -> None:
        # Every mid published is recorded in _in_flight before this runs (same thread),
        # so an unknown mid is some other message's (the retained status): ignore it.
        done: list[int] = []
        while not self._acked_mids.empty():
            done.extend(self._in_flight.pop(self._acked_mids.get(), ()))
        if done:
            self.outbox.remove(done)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def publish_health(self, readers: list[DeviceReader]) -> None:
        depth, oldest = self.outbox.depth()
        for r in readers:
            h = r.health
            body = {
                "device": r.device.id, "read_point": r.device.read_point,
                "ts": datetime.now(UTC).isoformat(), "connected": h.connected,
                "frames_ok": h.frames_ok, "frames_bad": h.frames_bad, "reads": h.reads,
                "noreads": h.noreads, "reopens": h.reopens,
                "outbox_depth": depth, "outbox_oldest_s": oldest,
            }  # fmt: skip
            self.client.publish(
                topics.health(self.config.agent.site, r.device.id), json.dumps(body), qos=0
            )

    def close(self) -> None:
        status = {"state": "offline", "since": datetime.now(UTC).isoformat()}
        self.client.publish(self._status_topic, json.dumps(status), qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()


def _by_device(pending: list[Pending]) -> dict[str, list[Pending]]:
    groups: dict[str, list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.event.device, []).append(p)
    return groups


def run_agent(config: AgentConfig, broker: BrokerAddress, stop: threading.Event) -> None:
    """Run until `stop` is set: readers fill the outbox, the publisher drains it."""
    outbox = Outbox(config.outbox_path)
    boot = outbox.next_boot_epoch()
    depth, _ = outbox.depth()
    log.info("agent %s boot %d: %d events waiting in the outbox", config.agent.id, boot, depth)
    readers = [DeviceReader(d, config.agent.site, boot, outbox, stop) for d in config.devices]
    threads = [threading.Thread(target=r.run, name=r.device.id, daemon=True) for r in readers]
    for t in threads:
        t.start()
    publisher = Publisher(config, broker, outbox)
    publisher.start()
    next_health = time.monotonic()
    try:
        while not stop.is_set():
            if publisher.pump() == 0:
                stop.wait(0.02)
            if time.monotonic() >= next_health:
                publisher.publish_health(readers)
                next_health = time.monotonic() + config.agent.health_interval_s
    finally:
        for t in threads:
            t.join(2)
        publisher.pump()
        publisher.close()
        outbox.close()

"""Publishes a scenario straight onto MQTT as wire-format v1 batches, as edge agents
would, for load tests: no ptys, no agents in between."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from firmware_sim.clock import PlaybackClock
from firmware_sim.scenario import Scenario
from parceltrack import topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.errors import ServiceError
from parceltrack.events import EventKind, ScanEvent
from parceltrack.mqtt import MqttClient, PublishInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishSettings:
    broker: BrokerAddress
    agent: str = "sim"
    boot: int = 1  # boot epoch in the event ids; give each run its own to avoid dedupe
    batch_max_events: int = 500
    flush_interval_s: float = 0.2  # wall-clock seconds a read may wait in a batch
    max_in_flight: int = 200  # unacknowledged QoS 1 batches before waiting
    tag_dwell_s: float = 0.6


def scan_events(
    scenario: Scenario, clock: PlaybackClock, boot: int, tag_dwell_s: float = 0.6
) -> Iterator[tuple[float, ScanEvent]]:
    """Each read as the event an edge agent would publish, with its scenario time:
    barcode reads and no-reads one by one, RFID passes smoothed into one `seen` event."""
    points = scenario.read_points
    seq: dict[str, int] = {}
    dwell = timedelta(seconds=clock.wall_seconds(tag_dwell_s))
    columns = scenario.columns
    for at_ms, rp_i, p_i, ok in zip(
        columns.at_ms.tolist(),
        columns.read_point.tolist(),
        columns.parcel.tolist(),
        columns.decoded.tolist(),
        strict=True,
    ):
        rp, parcel = points[rp_i], scenario.manifest[p_i]
        n = seq.get(rp.device, 0)
        seq[rp.device] = n + 1
        at = at_ms / 1000.0
        ts = clock.wall(at)
        if rp.is_rfid:
            event = ScanEvent(
                device=rp.device,
                boot=boot,
                seq=n,
                site=rp.site,
                ts=ts,
                read_point=rp.read_point,
                kind=EventKind.SEEN,
                epc=parcel.epc,
                rssi=-55.0,
                antenna=1,
                read_count=12,
                first_seen=ts,
                last_seen=ts + dwell,
            )
        elif ok:
            event = ScanEvent(
                device=rp.device,
                boot=boot,
                seq=n,
                site=rp.site,
                ts=ts,
                read_point=rp.read_point,
                kind=EventKind.READ,
                code=parcel.tracking_id,
                symbology="]C0",
                tracking_id=parcel.tracking_id,
            )
        else:
            event = ScanEvent(
                device=rp.device,
                boot=boot,
                seq=n,
                site=rp.site,
                ts=ts,
                read_point=rp.read_point,
                kind=EventKind.NOREAD,
            )
        yield at, event


class _Batches:
    """Per-device buffers, flushed when full or old enough."""

    def __init__(self, client: MqttClient, settings: PublishSettings) -> None:
        self.client = client
        self.settings = settings
        self.buffers: dict[str, list[ScanEvent]] = {}
        self.opened: dict[str, float] = {}
        self.infos: list[PublishInfo] = []
        self.events = 0
        self.batches = 0

    def add(self, event: ScanEvent, now: float) -> None:
        buf = self.buffers.setdefault(event.device, [])
        if not buf:
            self.opened[event.device] = now
        buf.append(event)
        if len(buf) >= self.settings.batch_max_events:
            self.flush(event.device)

    def flush_old(self, now: float) -> None:
        for device, opened in list(self.opened.items()):
            if self.buffers.get(device) and now - opened >= self.settings.flush_interval_s:
                self.flush(device)

    def flush(self, device: str) -> None:
        events = self.buffers.pop(device, [])
        self.opened.pop(device, None)
        if not events:
            return
        site = events[0].site
        payload = wire.encode_batch(site, device, self.settings.agent, events)
        info = self.client.publish(topics.events(site, device), payload, qos=1)
        self.infos.append(info)
        self.events += len(events)
        self.batches += 1
        if len(self.infos) >= self.settings.max_in_flight:
            self.settle(keep=self.settings.max_in_flight // 2)

    def flush_all(self) -> None:
        for device in list(self.buffers):
            self.flush(device)

    def settle(self, keep: int = 0, timeout: float = 60.0) -> None:
        """Wait until at most `keep` batches are unacknowledged."""
        deadline = time.monotonic() + timeout
        while len(self.infos) > keep:
            info = self.infos[0]
            if not info.is_published():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceError("the broker stopped acknowledging scan batches")
                info.wait_for_publish(min(remaining, 1.0))
                continue
            self.infos.pop(0)


def publish(
    scenario: Scenario,
    settings: PublishSettings,
    clock: PlaybackClock,
    paced: bool = True,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Publish every read as wire-format v1 batches; return the events acknowledged.

    Paced: each read leaves at its wall-clock time under `clock`. Unpaced: as fast as
    the broker takes them, timestamps still from `clock`."""
    stop = stop or threading.Event()
    client = MqttClient(f"sim-{settings.agent}-{settings.boot}", settings.broker)
    client.start()
    try:
        if not client.wait_connected(15.0):
            raise ServiceError(f"cannot connect to the broker at {settings.broker.host}")
        batches = _Batches(client, settings)
        origin = clock.start.timestamp()
        events = scan_events(scenario, clock, settings.boot, settings.tag_dwell_s)
        for added, (at, event) in enumerate(events, start=1):
            if stop.is_set():
                break
            if paced:
                delay = origin + at / clock.speed - time.time()
                while delay > 0 and not stop.is_set():
                    batches.flush_old(time.monotonic())
                    stop.wait(min(delay, settings.flush_interval_s))
                    delay = origin + at / clock.speed - time.time()
            now = time.monotonic()
            batches.add(event, now)
            batches.flush_old(now)
            if on_progress is not None and added % 1000 == 0:
                on_progress(added)
        batches.flush_all()
        batches.settle()
        if on_progress is not None:
            on_progress(batches.events)
        log.info("published %d events in %d batches", batches.events, batches.batches)
        return batches.events
    finally:
        client.stop()

"""Scenarios played onto virtual devices on real ptys, and published onto a real broker."""

import contextlib
import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from composition.services import PrivateMosquitto
from edge.barcode import BarcodeFramer
from firmware_sim.barcode import ScannerFraming
from firmware_sim.clock import PlaybackClock
from firmware_sim.epc import decode_sscc96
from firmware_sim.player import ScannerBank, play, scanner_frame
from firmware_sim.publish import PublishSettings, publish
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient
from parceltrack.wire import decode_batch
from tests.waiting import wait_until

SCENARIO = generate(
    ScenarioConfig(
        seed=21,
        parcels=60,
        sites=("LHR1", "MAN1"),
        rfid_sites=("MAN1",),
        rate_per_hour=20 * 3600,
        faults=FaultRates(noread=0.1, lost=0.05, recirculation=0.05),
    )
)


def _drain(fds: dict[str, int], want: int, timeout: float) -> dict[str, bytes]:
    got: dict[str, bytearray] = defaultdict(bytearray)

    def all_read() -> bool:
        for device, fd in fds.items():
            with contextlib.suppress(BlockingIOError):
                got[device] += os.read(fd, 65536)
        return sum(b.count(b"\r\n") for b in got.values()) >= want

    wait_until(all_read, timeout, f"{want} frames on the ptys", interval=0.02)
    return {d: bytes(b) for d, b in got.items()}


def test_player_sends_protocol_correct_frames_on_each_pty(tmp_path: Path) -> None:
    """Each scanner's pty carries, in order, exactly its reads: S10 as ]C0, no-reads as
    NOREAD, RFID read points (no TagSink) as GS1-128 ]C1 SSCC labels the edge decodes."""
    devices = sorted({r.device for r in SCENARIO.read_points})
    bank = ScannerBank(tmp_path, devices)
    fds = {d: os.open(tmp_path / d, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY) for d in devices}
    try:
        sent = play(SCENARIO, bank, clock=PlaybackClock(datetime.now(UTC), speed=500.0))
        assert sent == len(SCENARIO.reads)
        received = _drain(fds, sent, timeout=20)
    finally:
        for fd in fds.values():
            os.close(fd)
        bank.close()
    framing = ScannerFraming()
    for device in devices:
        expected = [r for r in SCENARIO.reads if r.device == device]
        assert received.get(device, b"") == b"".join(scanner_frame(r, framing) for r in expected)
        reads = BarcodeFramer().feed(received.get(device, b""))
        assert len(reads) == len(expected)
        for read, want in zip(reads, expected, strict=True):
            if want.epc is not None:
                assert read.symbology == "]C1" and read.sscc == decode_sscc96(want.epc).sscc
            elif want.code is not None:
                assert (read.symbology, read.tracking_id) == ("]C0", want.tracking_id)
            else:
                assert read.is_noread
    assert {r.protocol for r in SCENARIO.reads} >= {"mercury", "r2000"}


@dataclass
class RecordingReader:
    """A stand-in virtual RFID reader: keeps what was presented to its field."""

    presented: list[tuple[str, float]] = field(default_factory=list)

    def present(self, epc_hex: str, duration_s: float) -> None:
        self.presented.append((epc_hex, duration_s))


def test_rfid_read_points_go_to_their_tag_sinks(tmp_path: Path) -> None:
    """With a TagSink for an RFID device, its tags are presented there with the dwell
    scaled by the speed, and no pty is made for it."""
    reader = RecordingReader()
    sinks = {"MAN1-rfid-tun1": reader}
    bank = ScannerBank(tmp_path, [r.device for r in SCENARIO.read_points if r.device not in sinks])
    try:
        play(
            SCENARIO,
            bank,
            clock=PlaybackClock(datetime.now(UTC), speed=1000.0),
            tag_sinks=sinks,
            tag_dwell_s=0.6,
        )
    finally:
        bank.close()
    expected = [r.epc for r in SCENARIO.reads if r.device == "MAN1-rfid-tun1"]
    assert expected and [e for e, _ in reader.presented] == expected
    assert {d for _, d in reader.presented} == {0.6 / 1000.0}
    assert not (tmp_path / "MAN1-rfid-tun1").exists()


def test_playback_stops_when_told(tmp_path: Path) -> None:
    """A stop event ends a real-time playback early, having sent only what was due."""
    stop = threading.Event()
    bank = ScannerBank(tmp_path, [r.device for r in SCENARIO.read_points])
    threading.Timer(0.3, stop.set).start()
    try:
        sent = play(SCENARIO, bank, stop=stop, clock=PlaybackClock(datetime.now(UTC), 1.0))
    finally:
        bank.close()
    assert sent < len(SCENARIO.reads)


def test_publish_puts_every_read_on_the_broker_as_valid_batches(
    mqtt_server: PrivateMosquitto,
) -> None:
    """Unpaced publishing delivers each read once as wire-format v1, on its device's topic,
    with scan times from the playback clock."""
    batches: list[tuple[str, bytes]] = []
    sub = MqttClient(f"collector-{time.monotonic_ns()}", BrokerAddress.from_url(mqtt_server.url))
    sub.on_message(lambda msg: batches.append((msg.topic, msg.payload)))
    subscribed = threading.Event()
    sub.on_subscribe(lambda _reasons: subscribed.set())
    sub.start()
    try:
        assert sub.wait_connected()
        sub.subscribe(topics.ALL_EVENTS, qos=1)
        wait_until(subscribed.is_set, 10, "the SUBACK")
        clock = PlaybackClock(datetime.now(UTC) - timedelta(hours=1), speed=1.0)
        settings = PublishSettings(BrokerAddress.from_url(mqtt_server.url), boot=7)
        sent = publish(SCENARIO, settings, clock, paced=False)
        wait_until(
            lambda: sum(len(decode_batch(t, p).events) for t, p in batches) >= sent,
            10,
            "every batch",
        )
    finally:
        sub.stop()
    events = [e for t, p in batches for e in decode_batch(t, p).events]
    assert sent == len(events) == len(SCENARIO.reads)
    assert len({e.id for e in events}) == len(events)
    kinds = Counter(e.kind for e in events)
    assert kinds["noread"] == sum(1 for r in SCENARIO.reads if r.code is None and r.epc is None)
    assert kinds["seen"] == sum(1 for r in SCENARIO.reads if r.epc is not None)
    first = min(events, key=lambda e: e.ts)
    assert first.ts == clock.wall(SCENARIO.reads[0].at)


def test_paced_publishing_takes_the_scenario_time_divided_by_the_speed(
    mqtt_server: PrivateMosquitto,
) -> None:
    """At 400x a paced publish does not finish before the last read's wall-clock time."""
    clock = PlaybackClock(datetime.now(UTC) + timedelta(seconds=0.2), speed=400.0)
    settings = PublishSettings(BrokerAddress.from_url(mqtt_server.url), boot=8)
    sent = publish(SCENARIO, settings, clock, paced=True)
    assert sent == len(SCENARIO.reads)
    assert datetime.now(UTC) >= clock.wall(SCENARIO.reads[-1].at)

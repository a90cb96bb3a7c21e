"""Plays a scenario's reads onto virtual devices, in real time or accelerated.

Barcode read points are virtual barcode scanners on ptys. An RFID read point goes to
a `TagSink` when one is given for its device (the virtual Mercury and R2000 readers
implement it); without one, it is played through a barcode scanner on a pty that
sends the tag's SSCC as a GS1-128 label (`]C100` + the 18-digit SSCC), which the
edge's barcode driver decodes (BarcodeRead.sscc)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from firmware_sim.barcode import ScannerFraming, code128, frame, noread_frame
from firmware_sim.clock import PlaybackClock
from firmware_sim.epc import decode_sscc96
from firmware_sim.faults import FaultCounts, FaultPlan, mangle
from firmware_sim.pty import VirtualSerialPort
from firmware_sim.scenario import Scenario, ScheduledRead

log = logging.getLogger(__name__)


class TagSink(Protocol):
    """A virtual RFID reader's side facing the scenario: a tag enters its field and
    stays there `duration_s` wall-clock seconds (the reader spreads its reads, RSSI
    and antennas over that time, as it would for a real gate)."""

    def present(self, epc_hex: str, duration_s: float) -> None: ...


def scanner_frame(read: ScheduledRead, framing: ScannerFraming) -> bytes:
    """What a barcode scanner sends for a read: the S10 as Code 128, an RFID tag's SSCC
    as a GS1-128 label (fallback for RFID read points), or the no-read string."""
    if read.epc is not None:
        return frame([decode_sscc96(read.epc).gs1_128], framing)
    if read.code is not None:
        return frame([code128(read.code)], framing)
    return noread_frame(framing)


@dataclass
class ScannerBank:
    """One virtual barcode scanner per device, each on its own pty under `port_dir`.
    With `faults`, frames are garbled, truncated, duplicated or dropped at its rates."""

    port_dir: Path
    devices: Iterable[str]
    framing: ScannerFraming = field(default_factory=ScannerFraming)
    faults: FaultPlan | None = None

    def __post_init__(self) -> None:
        self.ports = {d: VirtualSerialPort(self.port_dir / d) for d in self.devices}
        self.frames_sent = 0
        self.fault_counts = FaultCounts()
        self._rng = random.Random(self.faults.seed if self.faults else 0)

    def send(self, read: ScheduledRead) -> None:
        data = scanner_frame(read, self.framing)
        if self.faults is not None:
            data = mangle([data], self.faults, self._rng, self.fault_counts)
        self.ports[read.device].write(data)
        self.frames_sent += 1

    def unplug(self, device: str) -> None:
        """The scanner's adapter is pulled: its port name vanishes."""
        self.ports[device].unplug()

    def replug(self, device: str) -> None:
        """Plugged back in: a new line under the same name."""
        self.ports[device] = VirtualSerialPort(self.port_dir / device)

    def close(self) -> None:
        for port in self.ports.values():
            port.close()


def play(
    scenario: Scenario,
    bank: ScannerBank,
    speed: float = 1.0,
    stop: threading.Event | None = None,
    clock: PlaybackClock | None = None,
    on_progress: Callable[[int], None] | None = None,
    tag_sinks: Mapping[str, TagSink] | None = None,
    tag_dwell_s: float = 0.6,
) -> int:
    """Send every read at its wall-clock time under `clock` (default: now, at `speed`);
    return how many were sent. `on_progress` gets the count sent so far, now and then.

    RFID reads of a device in `tag_sinks` are presented to that sink for `tag_dwell_s`
    scenario seconds (scaled by the speed); every other read goes to `bank`, whose
    devices must then leave out the ones with a sink."""
    sinks = tag_sinks or {}
    stop = stop or threading.Event()
    clock = clock or PlaybackClock(datetime.now(UTC), speed)
    origin = clock.start.timestamp()
    sent = 0
    for read in scenario.iter_reads():
        delay = origin + read.at / clock.speed - time.time()
        if delay > 0 and stop.wait(delay):
            break
        if stop.is_set():
            break
        sink = sinks.get(read.device)
        if sink is not None and read.epc is not None:
            sink.present(read.epc, tag_dwell_s / clock.speed)
        else:
            bank.send(read)
        sent += 1
        if on_progress is not None and sent % 100 == 0:
            on_progress(sent)
    if on_progress is not None:
        on_progress(sent)
    log.info("played %d of %d reads", sent, len(scenario.columns))
    return sent

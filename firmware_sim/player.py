"""Plays a scenario's reads onto virtual scanners, in real time or accelerated."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from firmware_sim.barcode import ScannerFraming, code128, frame, noread_frame
from firmware_sim.pty import VirtualSerialPort
from firmware_sim.scenario import Scenario, ScheduledRead

log = logging.getLogger(__name__)


@dataclass
class ScannerBank:
    """One virtual barcode scanner per device, each on its own pty under `port_dir`."""

    port_dir: Path
    devices: Iterable[str]
    framing: ScannerFraming = field(default_factory=ScannerFraming)

    def __post_init__(self) -> None:
        self.ports = {d: VirtualSerialPort(self.port_dir / d) for d in self.devices}
        self.frames_sent = 0

    def send(self, read: ScheduledRead) -> None:
        data = (
            frame([code128(read.code)], self.framing)
            if read.code is not None
            else noread_frame(self.framing)
        )
        self.ports[read.device].write(data)
        self.frames_sent += 1

    def close(self) -> None:
        for port in self.ports.values():
            port.close()


def play(
    scenario: Scenario,
    bank: ScannerBank,
    speed: float = 1.0,
    stop: threading.Event | None = None,
) -> int:
    """Send every read at its scenario time divided by `speed`; return how many were sent."""
    stop = stop or threading.Event()
    start = time.monotonic()
    sent = 0
    for read in scenario.reads:
        delay = start + read.at / speed - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        bank.send(read)
        sent += 1
    log.info("played %d of %d reads", sent, len(scenario.reads))
    return sent

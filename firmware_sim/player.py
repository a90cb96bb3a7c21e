"""Plays a scenario's reads onto virtual scanners, in real time or accelerated."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from firmware_sim.barcode import ScannerFraming, code128, frame, noread_frame
from firmware_sim.faults import FaultCounts, FaultPlan, mangle
from firmware_sim.pty import VirtualSerialPort
from firmware_sim.rfid import TagField, VirtualMercury, VirtualR2000
from firmware_sim.scenario import Scenario, ScheduledRead
from firmware_sim.transport import PtyTransport, TcpTransport

log = logging.getLogger(__name__)


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
        data = (
            frame([code128(read.code)], self.framing)
            if read.code is not None
            else noread_frame(self.framing)
        )
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


@dataclass
class ReaderBank:
    """One virtual RFID reader per device (Mercury or R2000), on a pty under `port_dir`
    or, with `tcp`, on a local TCP port for a socket:// URL. The scenario player calls
    `present(device, epc_hex, duration_s)` when a tagged parcel passes a read point."""

    port_dir: Path
    protocols: Mapping[str, str]  # device -> "mercury" | "r2000"
    antennas: tuple[int, ...] = (1, 2)
    faults: FaultPlan = field(default_factory=FaultPlan)
    tcp: bool = False

    def __post_init__(self) -> None:
        self.readers: dict[str, VirtualMercury | VirtualR2000] = {}
        for device, protocol in self.protocols.items():
            transport: PtyTransport | TcpTransport = (
                TcpTransport() if self.tcp else PtyTransport(self.port_dir / device)
            )
            tag_field = TagField(self.antennas, seed=len(self.readers))
            if protocol == "mercury":
                self.readers[device] = VirtualMercury(transport, tag_field, self.faults)
            elif protocol == "r2000":
                self.readers[device] = VirtualR2000(transport, tag_field, self.faults)
            else:
                raise ValueError(f"device {device}: unknown RFID protocol {protocol!r}")

    def url(self, device: str) -> str:
        """What the agent's TOML puts in `port` for this reader."""
        return self.readers[device].url

    def present(self, device: str, epc_hex: str, duration_s: float = 1.0) -> None:
        self.readers[device].present(epc_hex, duration_s)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


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

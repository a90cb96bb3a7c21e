"""Device drivers without I/O: each takes the bytes a device sent and the time, and
returns reads plus the bytes to send back. The serial adapter (edge/agent.py) only
moves bytes, so every conversation with a reader is testable without a port.

Mercury readers are driven as the vendor's host software does: firmware version,
current program (boot the application if the bootloader runs), Gen2 protocol,
region, antennas, power, then continuous reading; stopped on shutdown. R2000
modules answer one real-time inventory command with one round, so the driver
issues the command again after each round, antenna after antenna.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from edge import mercury, r2000
from edge.barcode import BarcodeFramer, BarcodeRead, BarcodeSettings
from edge.framing import Framer, LengthFramer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RfidRead:
    """One raw tag read, timed on the host's clock (Unix seconds)."""

    epc_hex: str
    antenna: int
    rssi: float
    at: float


Read = BarcodeRead | RfidRead
# Bytes of a partial frame still buffered after the line was quiet this long are a
# truncated frame (or a false start whose LEN promised too much): resynchronise.
STALE_PARTIAL_S = 0.1
F = TypeVar("F")


@dataclass
class DriverStats:
    frames_ok: int = 0
    frames_bad: int = 0  # bad checksum, truncated, or a shape the protocol does not have
    bytes_skipped: int = 0  # garbage between frames
    bytes_discarded: int = 0  # every byte dropped: garbage, bad frames, resyncs
    unknown: int = 0  # well-formed frames with an opcode or command we do not expect
    errors: int = 0  # error statuses the device reported
    keepalives: int = 0
    timeouts: int = 0  # commands the device did not answer in time (silent device)
    clock_skews: int = 0  # device timestamps too far from the host clock: re-anchored
    raw_reads: int = 0

    def copy_counters(self, framer: Framer[Any]) -> None:
        """The framer's frame and byte counters, as the health message reports them."""
        self.frames_ok = framer.frames_ok
        self.frames_bad = framer.frames_bad
        self.bytes_skipped = framer.bytes_skipped
        self.bytes_discarded = framer.bytes_discarded


class Driver(Protocol):
    stats: DriverStats

    def on_open(self, now: float) -> bytes: ...
    def feed(self, data: bytes, now: float) -> list[Read]: ...
    def poll(self, now: float) -> bytes: ...
    def on_close(self) -> bytes: ...


@dataclass
class BarcodeDriver:
    """Scanners talk on their own: nothing to send, only frames to split."""

    settings: BarcodeSettings
    stats: DriverStats = field(default_factory=DriverStats)

    def __post_init__(self) -> None:
        self._framer = BarcodeFramer(self.settings)

    def on_open(self, now: float) -> bytes:
        return b""

    def feed(self, data: bytes, now: float) -> list[Read]:
        reads: list[Read] = list(self._framer.feed(data))
        self.stats.copy_counters(self._framer)
        return reads

    def poll(self, now: float) -> bytes:
        return b""

    def on_close(self) -> bytes:
        return b""


class _LengthFramedDriver(Generic[F]):
    """What the Mercury and R2000 drivers share: their framer gets the bytes, gives up
    a partial frame once the line has been quiet, and lends the stats its counters.
    Each driver handles the frames (`_handle`)."""

    stats: DriverStats
    _framer: LengthFramer[F]
    _last_byte: float

    def feed(self, data: bytes, now: float) -> list[Read]:
        if data:
            self._last_byte = now
            frames = self._framer.feed(data)
        elif self._framer.buffered and now - self._last_byte > STALE_PARTIAL_S:
            frames = self._framer.resync()
        else:
            frames = []
        reads: list[Read] = []
        for frame in frames:
            self._handle(frame, now, reads)
        self.stats.copy_counters(self._framer)
        return reads

    def _handle(self, frame: F, now: float, reads: list[Read]) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MercurySettings:
    region: str = "EU"
    antennas: tuple[int, ...] = (1,)
    power_dbm: float = 27.0
    response_timeout_s: float = 1.0
    # A reading Mercury sends keep-alives about every second; this long without a
    # byte means it went silent, so the driver starts the conversation again.
    silence_timeout_s: float = 5.0
    max_clock_skew_s: float = 2.0


@dataclass
class _Step:
    frame: bytes
    expect: int  # opcode or command of the answer
    on_answer: Callable[[bytes], None] | None = None


@dataclass
class MercuryDriver(_LengthFramedDriver[mercury.Frame]):
    settings: MercurySettings = field(default_factory=MercurySettings)
    stats: DriverStats = field(default_factory=DriverStats)
    firmware: str | None = None
    streaming: bool = False

    def __post_init__(self) -> None:
        self._framer = mercury.MercuryFramer(responses=True)
        self._steps: list[_Step] = []
        self._sent_at = 0.0
        self._last_byte = 0.0
        self._anchor: float | None = None  # host time of the device's timestamp 0
        self._pending = b""

    def _setup_steps(self) -> list[_Step]:
        s = self.settings
        cmd = mercury.encode_command
        op = mercury.Opcode
        region = mercury.REGIONS[s.region]
        pairs = b"".join(bytes((a, a)) for a in s.antennas)  # monostatic: TX port = RX port
        power = round(s.power_dbm * 100).to_bytes(2, "big")  # centi-dBm
        return [
            _Step(cmd(op.VERSION), op.VERSION, self._on_version),
            _Step(cmd(op.GET_CURRENT_PROGRAM), op.GET_CURRENT_PROGRAM, self._on_program),
            _Step(cmd(op.SET_TAG_PROTOCOL, bytes((0, mercury.PROTOCOL_GEN2))), op.SET_TAG_PROTOCOL),
            _Step(cmd(op.SET_REGION, bytes((region,))), op.SET_REGION),
            _Step(cmd(op.SET_ANTENNA_PORT, b"\x02" + pairs), op.SET_ANTENNA_PORT),
            _Step(cmd(op.SET_READ_TX_POWER, power), op.SET_READ_TX_POWER),
            _Step(
                cmd(op.MULTI_PROTOCOL_TAG_OP, mercury.START_CONTINUOUS),
                op.MULTI_PROTOCOL_TAG_OP,
                self._on_started,
            ),
        ]

    def _on_version(self, data: bytes) -> None:
        if len(data) >= 16:
            fw = data[12:16]
            self.firmware = f"{fw[0]:02x}.{fw[1]:02x}.{fw[2]:02x}.{fw[3]:02x}"
            log.info("mercury: firmware %s", self.firmware)

    def _on_program(self, data: bytes) -> None:
        if data and data[0] & 0x03 == 1:  # the bootloader runs: start the application
            log.info("mercury: reader is in its bootloader; booting the firmware")
            self._steps.insert(0, _Step(mercury.encode_command(mercury.Opcode.BOOT_FIRMWARE), 0x04))

    def _on_started(self, data: bytes) -> None:
        self.streaming = True
        self._anchor = None
        log.info("mercury: continuous reading started")

    def on_open(self, now: float) -> bytes:
        self.streaming = False
        self._framer = mercury.MercuryFramer(responses=True)
        self._steps = self._setup_steps()
        self._last_byte = now
        return self._send_next(now)

    def _send_next(self, now: float) -> bytes:
        if not self._steps:
            return b""
        self._sent_at = now
        return self._steps[0].frame

    def _handle(self, frame: mercury.Frame, now: float, reads: list[Read]) -> None:
        if frame.is_keepalive:
            self.stats.keepalives += 1
            return
        if self._steps and frame.opcode == self._steps[0].expect:
            step = self._steps.pop(0)
            if frame.status != mercury.Status.OK:
                self.stats.errors += 1
                log.warning(
                    "mercury: opcode 0x%02x answered with status 0x%04x",
                    frame.opcode,
                    frame.status,
                )
            elif step.on_answer:
                step.on_answer(frame.data)
            self._pending += self._send_next(now)
            return
        if frame.opcode == mercury.Opcode.READ_TAG_ID_MULTIPLE and self.streaming:
            if frame.status != mercury.Status.OK:
                self.stats.errors += 1
                log.warning("mercury: reader reports status 0x%04x", frame.status)
                return
            tag = mercury.decode_tag_read(frame.data)
            if tag is None:
                self.stats.frames_bad += 1
                return
            self.stats.raw_reads += 1
            reads.append(
                RfidRead(tag.epc.hex().upper(), tag.antenna, tag.rssi, self._time(tag, now))
            )
            return
        self.stats.unknown += 1

    def _time(self, tag: mercury.TagRead, now: float) -> float:
        """Host time of a read from the device's millisecond clock; re-anchored (and
        counted) when the device clock has drifted or jumped beyond the allowed skew."""
        device_s = tag.timestamp_ms / 1000
        if self._anchor is None:
            self._anchor = now - device_s
        at = self._anchor + device_s
        if abs(at - now) > self.settings.max_clock_skew_s:
            self.stats.clock_skews += 1
            self._anchor = now - device_s
            at = now
        return at

    def poll(self, now: float) -> bytes:
        out, self._pending = self._pending, b""
        if self._steps and now - self._sent_at > self.settings.response_timeout_s:
            self.stats.timeouts += 1
            log.warning(
                "mercury: no answer to opcode 0x%02x; sending it again", self._steps[0].expect
            )
            out += self._send_next(now)
        elif self.streaming and now - self._last_byte > self.settings.silence_timeout_s:
            self.stats.timeouts += 1
            log.warning("mercury: reader silent for %.1fs; starting over", now - self._last_byte)
            out += mercury.encode_command(
                mercury.Opcode.MULTI_PROTOCOL_TAG_OP, mercury.STOP_CONTINUOUS
            ) + self.on_open(now)
        return out

    def on_close(self) -> bytes:
        if not self.streaming:
            return b""
        self.streaming = False
        return mercury.encode_command(mercury.Opcode.MULTI_PROTOCOL_TAG_OP, mercury.STOP_CONTINUOUS)


@dataclass(frozen=True, slots=True)
class R2000Settings:
    address: int = 0x01
    antennas: tuple[int, ...] = (1,)
    power_dbm: int = 30
    repeat: int = 1  # inventory repeats per command
    response_timeout_s: float = 1.0


@dataclass
class R2000Driver(_LengthFramedDriver[r2000.Frame]):
    settings: R2000Settings = field(default_factory=R2000Settings)
    stats: DriverStats = field(default_factory=DriverStats)
    firmware: str | None = None
    rounds: int = 0

    def __post_init__(self) -> None:
        self._framer = r2000.R2000Framer()
        self._steps: list[_Step] = []
        self._sent_at = 0.0
        self._antenna_index = 0
        self._pending = b""
        self._last_byte = 0.0

    def _cmd(self, command: int, data: bytes = b"") -> _Step:
        return _Step(r2000.encode(self.settings.address, command, data), command)

    def on_open(self, now: float) -> bytes:
        self._framer = r2000.R2000Framer()
        c = r2000.Command
        version = self._cmd(c.GET_FIRMWARE_VERSION)
        version.on_answer = self._on_version
        self._steps = [version, self._cmd(c.SET_OUTPUT_POWER, bytes((self.settings.power_dbm,)))]
        self._antenna_index = 0
        self._queue_round()
        self._sent_at = now
        return self._steps[0].frame

    def _on_version(self, data: bytes) -> None:
        if len(data) >= 2:
            self.firmware = f"{data[0]}.{data[1]:02d}"
            log.info("r2000: firmware %s", self.firmware)

    def _queue_round(self) -> None:
        antennas = self.settings.antennas
        antenna = antennas[self._antenna_index % len(antennas)]
        self._antenna_index += 1
        c = r2000.Command
        if len(antennas) > 1 or self.rounds == 0:
            self._steps.append(self._cmd(c.SET_WORK_ANTENNA, bytes((antenna - 1,))))
        self._steps.append(self._cmd(c.REAL_TIME_INVENTORY, bytes((self.settings.repeat,))))

    def _handle(self, frame: r2000.Frame, now: float, reads: list[Read]) -> None:
        expect = self._steps[0].expect if self._steps else None
        if frame.command == r2000.Command.REAL_TIME_INVENTORY:
            what = r2000.interpret(frame)
            if isinstance(what, r2000.TagRead):
                self.stats.raw_reads += 1
                reads.append(RfidRead(what.epc.hex().upper(), what.antenna, what.rssi, now))
                return
            if isinstance(what, r2000.RoundEnd | r2000.CommandError):
                if isinstance(what, r2000.CommandError):
                    # e.g. 0x22 antenna missing: the round is over all the same
                    self.stats.errors += 1
                    log.warning("r2000: inventory error 0x%02x", what.code)
                if expect == r2000.Command.REAL_TIME_INVENTORY:
                    self._steps.pop(0)
                    self.rounds += 1
                    self._queue_round()
                    self._pending += self._send(now)
                return
            self.stats.frames_bad += 1
            return
        if frame.command == expect:
            step = self._steps.pop(0)
            if len(frame.data) == 1 and frame.data[0] != r2000.SUCCESS and step.on_answer is None:
                self.stats.errors += 1
                log.warning(
                    "r2000: command 0x%02x failed with 0x%02x", frame.command, frame.data[0]
                )
            elif step.on_answer:
                step.on_answer(frame.data)
            self._pending += self._send(now)
            return
        self.stats.unknown += 1

    def _send(self, now: float) -> bytes:
        self._sent_at = now
        return self._steps[0].frame if self._steps else b""

    def poll(self, now: float) -> bytes:
        out, self._pending = self._pending, b""
        if self._steps and now - self._sent_at > self.settings.response_timeout_s:
            self.stats.timeouts += 1
            log.warning(
                "r2000: no answer to command 0x%02x; sending it again", self._steps[0].expect
            )
            out += self._send(now)
        return out

    def on_close(self) -> bytes:
        return b""  # a module stops by itself at the end of the round

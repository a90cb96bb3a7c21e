"""Virtual RFID readers that speak the edge drivers' protocols byte for byte: a
ThingMagic Mercury reader and an R2000 module, on a pty or a TCP port, with their
command handling, timing, keep-alives and configurable faults.

A read point's scenario calls `present(epc_hex, duration_s)`: the tag is in the
field for that long; each antenna sees it over its part of the pass (antennas in
order along the direction of travel), RSSI peaks mid-window, and reads are spread
over the time the tag is seen.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from edge import mercury, r2000
from firmware_sim.faults import FaultCounts, FaultPlan, mangle

log = logging.getLogger(__name__)

PC_96 = 0x3000  # Gen2 PC word for a 96-bit EPC


def gen2_crc(data: bytes) -> int:
    """The tag's own CRC-16 over PC + EPC (ISO 18000-63: poly 0x1021, init and final
    complement 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc ^ 0xFFFF


class Transport(Protocol):
    @property
    def url(self) -> str: ...

    def read(self, timeout: float) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def unplug(self) -> None: ...
    def replug(self) -> None: ...
    def close(self) -> None: ...

    @property
    def plugged(self) -> bool: ...


@dataclass
class _Presence:
    epc: bytes
    start: float
    end: float
    antennas: tuple[int, ...]


@dataclass
class TagField:
    """The tags in a reader's field and how each antenna sees them over time."""

    antennas: tuple[int, ...] = (1,)
    read_probability: float = 0.8  # per tag, antenna and inventory cycle
    peak_rssi: float = -45.0
    seed: int = 0
    _tags: list[_Presence] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def present(
        self,
        epc_hex: str,
        duration_s: float,
        antennas: tuple[int, ...] | None = None,
        now: float | None = None,
    ) -> None:
        """A tag passes through the field for `duration_s`, seen by `antennas` in that
        order (default: all, in order: travel towards higher-numbered antennas)."""
        start = time.monotonic() if now is None else now
        with self._lock:
            self._tags.append(
                _Presence(
                    bytes.fromhex(epc_hex), start, start + duration_s, antennas or self.antennas
                )
            )

    def visible(self, now: float, antenna: int) -> list[tuple[bytes, float]]:
        """(EPC, RSSI) of each tag that answers on `antenna` in one cycle at `now`."""
        out = []
        with self._lock:
            self._tags = [t for t in self._tags if t.end > now]
            for t in self._tags:
                if antenna not in t.antennas or t.start > now:
                    continue
                k, n = t.antennas.index(antenna), len(t.antennas)
                span = t.end - t.start
                centre, half = t.start + span * (k + 1) / (n + 1), span / (n + 1)
                offset = abs(now - centre) / half
                if offset > 1 or self._rng.random() > self.read_probability:
                    continue
                rssi = self.peak_rssi - 20 * offset * offset + self._rng.gauss(0, 1.0)
                out.append((t.epc, rssi))
        return out

    @property
    def in_field(self) -> int:
        with self._lock:
            return len(self._tags)


@dataclass
class DeviceCounters:
    frames_sent: int = 0
    tag_reads_sent: int = 0
    commands: int = 0
    unplugs: int = 0
    faults: FaultCounts = field(default_factory=FaultCounts)


class _VirtualDevice:
    """The device's thread: reads commands, answers them, streams what it reads."""

    cycle_s = 0.02

    def __init__(self, transport: Transport, field: TagField, faults: FaultPlan) -> None:
        self.transport = transport
        self.field = field
        self.faults = faults
        self.counters = DeviceCounters()
        self._rng = random.Random(faults.seed)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._unplugged_by_schedule = False
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.transport.url

    def present(
        self, epc_hex: str, duration_s: float, antennas: tuple[int, ...] | None = None
    ) -> None:
        self.field.present(epc_hex, duration_s, antennas)

    def unplug(self) -> None:
        """The adapter is pulled: the port vanishes (done on the device's own thread)."""
        self._requests.put("unplug")
        self._wait_requests()

    def replug(self) -> None:
        """Plugged back in: the port returns under the same name; the reader has
        power-cycled, so it waits to be set up again."""
        self._requests.put("replug")
        self._wait_requests()

    def _wait_requests(self) -> None:
        deadline = time.monotonic() + 2
        while not self._requests.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(self.cycle_s)

    def _do(self, request: str) -> None:
        if request == "unplug":
            self.counters.unplugs += 1
            self.transport.unplug()
        else:
            self.power_cycle()
            self.transport.replug()

    def power_cycle(self) -> None:
        """Forget the host's configuration, as a reader that lost power does."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.transport.close()

    def _active(self) -> set[str]:
        return self.faults.active(time.monotonic() - self._started)

    def _run(self) -> None:
        while not self._stop.is_set():
            while not self._requests.empty():
                self._do(self._requests.get())
            active = self._active()
            if "unplug" in active and not self._unplugged_by_schedule:
                self._unplugged_by_schedule = True
                self._do("unplug")
            elif "unplug" not in active and self._unplugged_by_schedule:
                self._unplugged_by_schedule = False
                self._do("replug")
            data = self.transport.read(self.cycle_s)
            if "silent" in active:
                continue  # a hung device: hears nothing, says nothing
            try:
                self._step(data, time.monotonic(), active)
            except Exception:  # a simulator bug must show, not kill the device silently
                log.exception("virtual device %s failed", self.url)

    def _send(self, frames: list[bytes], active: set[str], reads: bool = False) -> None:
        if not frames:
            return
        # Faults hit tag reads; command answers go out clean unless a window forces it.
        plan = self.faults if reads else FaultPlan()
        data = mangle(frames, plan, self._rng, self.counters.faults, active)
        self.counters.frames_sent += len(frames)
        self.transport.write(data)

    def _step(self, data: bytes, now: float, active: set[str]) -> None:
        raise NotImplementedError


class VirtualMercury(_VirtualDevice):
    """A Mercury reader (M6e-like): answers version and configuration commands and
    streams tag reads only after it is told to start continuous reading."""

    keepalive_s = 1.0

    def __init__(
        self,
        transport: Transport,
        field: TagField | None = None,
        faults: FaultPlan | None = None,
        in_bootloader: bool = False,
    ) -> None:
        self._framer = mercury.MercuryFramer(responses=False)
        self.in_bootloader = in_bootloader
        self.streaming = False
        self.region: int | None = None
        self.power_cdbm: int | None = None
        self.antennas: tuple[int, ...] = (1,)
        self._stream_start = 0.0
        self._next_cycle = 0.0
        self._next_keepalive = 0.0
        super().__init__(transport, field or TagField(), faults or FaultPlan())

    def power_cycle(self) -> None:
        self.streaming = False
        self._framer = mercury.MercuryFramer(responses=False)

    def _step(self, data: bytes, now: float, active: set[str]) -> None:
        for cmd in self._framer.feed(data):
            self.counters.commands += 1
            self._send([self._answer(cmd, now)], active)
        if not self.streaming:
            return
        if now >= self._next_cycle:
            self._next_cycle = now + self.cycle_s
            self._send(self._tag_frames(now), active, reads=True)
        if now >= self._next_keepalive:
            self._next_keepalive = now + self.keepalive_s
            self._send(
                [
                    mercury.encode_response(
                        mercury.Opcode.READ_TAG_ID_MULTIPLE, mercury.Status.NO_TAGS_FOUND
                    )
                ],
                active,
            )

    def _answer(self, cmd: mercury.Frame, now: float) -> bytes:
        op, d, st = mercury.Opcode, cmd.data, mercury.Status
        reply = mercury.encode_response
        if cmd.opcode == op.VERSION:
            body = bytes.fromhex("1203000018000000202308150109000300000010")
            return reply(op.VERSION, 0, body)
        if cmd.opcode == op.GET_CURRENT_PROGRAM:
            return reply(op.GET_CURRENT_PROGRAM, 0, bytes((1 if self.in_bootloader else 2,)))
        if cmd.opcode == op.BOOT_FIRMWARE:
            self.in_bootloader = False
            return reply(op.BOOT_FIRMWARE, 0)
        if self.in_bootloader:  # the bootloader knows only the commands above
            return reply(cmd.opcode, st.INVALID_OPCODE)
        if cmd.opcode == op.SET_TAG_PROTOCOL:
            ok = d == bytes((0, mercury.PROTOCOL_GEN2))
            return reply(cmd.opcode, st.OK if ok else st.INVALID_PARAMETER)
        if cmd.opcode == op.SET_REGION:
            if len(d) != 1 or d[0] not in mercury.REGIONS.values():
                return reply(cmd.opcode, st.INVALID_PARAMETER)
            self.region = d[0]
            return reply(cmd.opcode)
        if cmd.opcode == op.SET_ANTENNA_PORT:
            if len(d) < 3 or d[0] != 2 or len(d) % 2 != 1:
                return reply(cmd.opcode, st.WRONG_NUMBER_OF_DATA)
            self.antennas = tuple(d[i + 1] for i in range(1, len(d), 2))
            return reply(cmd.opcode)
        if cmd.opcode == op.SET_READ_TX_POWER:
            if len(d) != 2:
                return reply(cmd.opcode, st.WRONG_NUMBER_OF_DATA)
            power = int.from_bytes(d, "big")
            if power > 3150:
                return reply(cmd.opcode, st.POWER_TOO_HIGH)
            self.power_cdbm = power
            return reply(cmd.opcode)
        if cmd.opcode == op.MULTI_PROTOCOL_TAG_OP:
            if d == mercury.START_CONTINUOUS:
                self.streaming = True
                self._stream_start = now
                self._next_keepalive = now + self.keepalive_s
                return reply(cmd.opcode, 0, d[:3])
            if d == mercury.STOP_CONTINUOUS:
                self.streaming = False
                return reply(cmd.opcode, 0, d)
            return reply(cmd.opcode, st.INVALID_PARAMETER)
        return reply(cmd.opcode, st.INVALID_OPCODE)

    def _tag_frames(self, now: float) -> list[bytes]:
        clock = (now - self._stream_start) * (
            1 + self.faults.clock_drift
        ) + self.faults.clock_skew_s
        ms = max(0, int(clock * 1000)) & 0xFFFFFFFF
        frames = []
        for antenna in self.antennas:
            for epc, rssi in self.field.visible(now, antenna):
                pc = PC_96 if len(epc) == 12 else (len(epc) // 2) << 11
                read = mercury.TagRead(
                    epc=epc, rssi=max(-128, min(127, round(rssi))), antenna=antenna,
                    frequency_khz=865_700 + 600 * self._rng.randrange(4), timestamp_ms=ms,
                    phase=self._rng.randrange(181), protocol=mercury.PROTOCOL_GEN2, pc=pc,
                    tag_crc=gen2_crc(pc.to_bytes(2, "big") + epc),
                )  # fmt: skip
                frames.append(
                    mercury.encode_response(
                        mercury.Opcode.READ_TAG_ID_MULTIPLE, 0, mercury.encode_tag_read(read)
                    )
                )
        self.counters.tag_reads_sent += len(frames)
        return frames


class VirtualR2000(_VirtualDevice):
    """An R2000 module: answers each real-time inventory command with one round on its
    work antenna (one frame per tag read, then the round's end), then waits."""

    round_s = 0.03  # air time of one inventory repeat

    def __init__(
        self,
        transport: Transport,
        field: TagField | None = None,
        faults: FaultPlan | None = None,
        address: int = 1,
    ) -> None:
        self._framer = r2000.R2000Framer()
        self.address = address
        self.work_antenna = 1
        self.power_dbm: int | None = None
        self._round_due: float | None = None
        self._round_repeats = 0
        self.rounds = 0
        super().__init__(transport, field or TagField(), faults or FaultPlan())

    def power_cycle(self) -> None:
        self._round_due = None
        self._framer = r2000.R2000Framer()

    def _step(self, data: bytes, now: float, active: set[str]) -> None:
        for cmd in self._framer.feed(data):
            self.counters.commands += 1
            answer = self._answer(cmd, now)
            if answer:
                self._send([answer], active)
        if self._round_due is not None and now >= self._round_due:
            self._round_due = None
            frames, end = self._round(now)
            self._send(frames, active, reads=True)
            self._send([end], active)

    def _answer(self, cmd: r2000.Frame, now: float) -> bytes | None:
        c = r2000.Command
        ok = r2000.encode(self.address, cmd.command, bytes((r2000.SUCCESS,)))
        if cmd.address not in (self.address, 0xFF):
            return None  # addressed to another module on the bus
        if cmd.command == c.GET_FIRMWARE_VERSION:
            return r2000.encode(self.address, cmd.command, bytes((8, 1)))
        if cmd.command == c.SET_WORK_ANTENNA and len(cmd.data) == 1 and cmd.data[0] < 8:
            self.work_antenna = cmd.data[0] + 1
            return ok
        if cmd.command == c.SET_OUTPUT_POWER and len(cmd.data) == 1 and cmd.data[0] <= 33:
            self.power_dbm = cmd.data[0]
            return ok
        if cmd.command == c.SET_FREQUENCY_REGION:
            return ok
        if cmd.command == c.REAL_TIME_INVENTORY and len(cmd.data) == 1:
            self._round_repeats = max(1, cmd.data[0])
            self._round_due = now + self.round_s * self._round_repeats
            return None
        return r2000.encode(self.address, cmd.command, b"\x11")  # command failed

    def _round(self, now: float) -> tuple[list[bytes], bytes]:
        frames = []
        for _ in range(self._round_repeats):
            for epc, rssi in self.field.visible(now, self.work_antenna):
                read = r2000.TagRead(
                    epc=epc, pc=PC_96, rssi=max(-129, min(-2, round(rssi))),
                    antenna=self.work_antenna, frequency_index=self._rng.randrange(6),
                )  # fmt: skip
                frames.append(r2000.encode_tag_read(self.address, read))
        self.counters.tag_reads_sent += len(frames)
        self.rounds += 1
        rate = math.ceil(len(frames) / (self.round_s * self._round_repeats))
        end = r2000.RoundEnd(self.work_antenna, min(rate, 0xFFFF), len(frames))
        return frames, r2000.encode_round_end(self.address, end)

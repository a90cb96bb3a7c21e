"""The R2000-module serial protocol (many fixed UHF gates), pure: bytes in, frames out.

Every frame, both directions: ``A0 LEN ADDR CMD DATA CHECK`` with LEN = 3 + len(DATA)
and CHECK the two's complement of the sum of all earlier bytes. Real-time inventory
(0x89) answers with one frame per tag read (``FreqAnt PC(2) EPC RSSI``), then a frame
of LEN 0x0A that ends the round; the host must issue the command again for the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from edge.framing import LengthFramer

HEAD = 0xA0
SUCCESS = 0x10  # the one-byte answer of a set command that worked
END_OF_ROUND_LEN = 0x0A


class Command(IntEnum):
    GET_FIRMWARE_VERSION = 0x72
    SET_WORK_ANTENNA = 0x74
    SET_OUTPUT_POWER = 0x76
    SET_FREQUENCY_REGION = 0x78
    REAL_TIME_INVENTORY = 0x89


# The modules report RSSI as a positive index; their documented table maps it to
# dBm with an offset of 129 (e.g. 98 -> -31 dBm). The top bit marks antennas 5-8 on
# eight-port modules.
RSSI_OFFSET = 129


def checksum(data: bytes | bytearray | memoryview) -> int:
    return (-sum(data)) & 0xFF


def encode(address: int, command: int, data: bytes = b"") -> bytes:
    body = bytes((HEAD, len(data) + 3, address, command)) + data
    return body + bytes((checksum(body),))


class Frame(NamedTuple):
    address: int
    command: int
    data: bytes


class TagRead(NamedTuple):
    """One tag read in a real-time inventory round."""

    epc: bytes
    pc: int
    rssi: int  # dBm
    antenna: int  # 1-based, as installers label the ports
    frequency_index: int  # channel number within the configured region


@dataclass(frozen=True, slots=True)
class RoundEnd:
    """The frame that ends a real-time inventory round."""

    antenna: int  # 1-based
    read_rate: int  # tags per second in the round
    total_reads: int


@dataclass(frozen=True, slots=True)
class CommandError:
    """A one-byte answer that is not success: the module's error code."""

    command: int
    code: int


def encode_tag_read(address: int, read: TagRead) -> bytes:
    ant = read.antenna - 1
    freq_ant = (read.frequency_index << 2) | (ant & 0x03)
    rssi = (read.rssi + RSSI_OFFSET) & 0x7F | (0x80 if ant >= 4 else 0)
    data = bytes((freq_ant,)) + read.pc.to_bytes(2, "big") + read.epc + bytes((rssi,))
    return encode(address, Command.REAL_TIME_INVENTORY, data)


def encode_round_end(address: int, end: RoundEnd) -> bytes:
    data = (
        bytes((end.antenna - 1,))
        + end.read_rate.to_bytes(2, "big")
        + end.total_reads.to_bytes(4, "big")
    )
    return encode(address, Command.REAL_TIME_INVENTORY, data)


def interpret(frame: Frame) -> TagRead | RoundEnd | CommandError | None:
    """What an inventory answer means; None for an unexpected shape (counted by caller)."""
    d = frame.data
    if frame.command != Command.REAL_TIME_INVENTORY:
        return None
    if len(d) == 1:
        return None if d[0] == SUCCESS else CommandError(frame.command, d[0])
    if len(d) + 3 == END_OF_ROUND_LEN:
        return RoundEnd(d[0] + 1, int.from_bytes(d[1:3], "big"), int.from_bytes(d[3:7], "big"))
    if len(d) < 6:
        return None
    rssi_byte, freq_ant = d[-1], d[0]
    return TagRead(
        d[3:-1],
        (d[1] << 8) | d[2],
        (rssi_byte & 0x7F) - RSSI_OFFSET,
        (freq_ant & 0x03) + (4 if rssi_byte & 0x80 else 0) + 1,
        freq_ant >> 2,
    )


@dataclass
class R2000Framer(LengthFramer[Frame]):
    """Splits a byte stream into frames, resynchronising on the next 0xA0 after garbage,
    a bad checksum or a truncated frame; never raises."""

    def feed(self, data: bytes) -> list[Frame]:
        # Counters live in locals inside the loop: it runs once per frame.
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        append = frames.append
        pos, n, ok, bad, skipped, framed = 0, len(buf), 0, 0, 0, 0
        while True:
            start = buf.find(HEAD, pos)
            if start < 0:
                skipped += n - pos
                pos = n
                break
            skipped += start - pos
            pos = start
            if n - pos < 2:
                break
            end = pos + 2 + buf[pos + 1]
            if end - pos < 5:  # LEN below 3: no frame has that
                bad += 1
                pos += 1
                continue
            if end > n:
                break
            if sum(buf[pos:end]) & 0xFF:
                # The sum of a whole good frame, checksum included, is 0 mod 256.
                bad += 1
                pos += 1
                continue
            append(Frame(buf[pos + 2], buf[pos + 3], bytes(buf[pos + 4 : end - 1])))
            ok += 1
            framed += end - pos
            pos = end
        del buf[:pos]
        self._tally(ok, bad, skipped, framed)
        return frames

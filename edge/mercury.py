"""ThingMagic/JADAK Mercury serial protocol, pure: bytes in, frames out, and back.

host -> reader: ``FF LEN OPCODE DATA CRC_HI CRC_LO``
reader -> host: ``FF LEN OPCODE STATUS(2) DATA CRC_HI CRC_LO``

LEN counts DATA only. The CRC is Mercury's own (init 0xFFFF, a nibble at a time,
``crc = ((crc << 4) | nibble) ^ T[crc >> 12]`` with ``T[i] = i * 0x1021``) over
LEN..DATA. Layouts follow the open SparkFun Simultaneous RFID library and
python-mercuryapi's serial_reader_l3.c. The simulator encodes with the same code.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from edge.framing import LengthFramer

SOH = 0xFF
_NIBBLE_TABLE = tuple((i * 0x1021) & 0xFFFF for i in range(16))


class Opcode(IntEnum):
    VERSION = 0x03
    BOOT_FIRMWARE = 0x04
    GET_CURRENT_PROGRAM = 0x0C
    READ_TAG_ID_MULTIPLE = 0x22  # also the opcode of streamed tag reads
    MULTI_PROTOCOL_TAG_OP = 0x2F  # starts and stops continuous reading
    SET_ANTENNA_PORT = 0x91
    SET_READ_TX_POWER = 0x92
    SET_TAG_PROTOCOL = 0x93
    SET_REGION = 0x97


class Status(IntEnum):
    OK = 0x0000
    WRONG_NUMBER_OF_DATA = 0x0100
    INVALID_OPCODE = 0x0101
    UNIMPLEMENTED_OPCODE = 0x0102
    POWER_TOO_HIGH = 0x0103
    INVALID_PARAMETER = 0x0105
    NO_TAGS_FOUND = 0x0400  # with LEN 0 during continuous reading: the keep-alive
    TEMPERATURE_THROTTLE = 0x0504
    SYSTEM_UNKNOWN_ERROR = 0x7F00


REGIONS = {"NA": 0x01, "IN": 0x04, "JP": 0x05, "PRC": 0x06, "EU": 0x08, "KR": 0x09,
           "AU": 0x0B, "NZ": 0x0C, "NA2": 0x0D, "OPEN": 0xFF}  # fmt: skip
PROTOCOL_GEN2 = 0x05
# Continuous (asynchronous) reading as the SparkFun library starts it: multi-protocol
# tag op, no timeout, read tag ID multiple with metadata flags 0x001B... The stop
# command is the same opcode with sub-option 02.
START_CONTINUOUS = bytes.fromhex("00 00 01 22 00 00 05 07 22 10 00 1B 03 E8 01 FF")
STOP_CONTINUOUS = bytes.fromhex("000002")
# Bytes 5..11 of a streamed read: option 0x10, metadata flags, sub-opcode, search
# flags, tag count. The host does not need them; the simulator sends SparkFun's values.
READ_PREFIX = bytes.fromhex("10001B01FF0101")


def crc_reference(data: bytes) -> int:
    """The Mercury CRC exactly as specified, a nibble at a time (slow; for tests)."""
    crc = 0xFFFF
    for byte in data:
        for nibble in (byte >> 4, byte & 0x0F):
            crc = (((crc << 4) | nibble) & 0xFFFF) ^ _NIBBLE_TABLE[crc >> 12]
    return crc


# The nibble CRC shifts the message into the register ("augmented"), while
# binascii.crc_hqx (same polynomial 0x1021) does not. For a message M || B, with B its
# last two bytes: mercury(M || B) = crc_hqx(M, init') ^ B, where init' is the register
# after shifting two zero bytes into 0xFFFF. That lets C do the work: about 20x faster.
_INIT_PRIME = crc_reference(b"\x00\x00")


def crc(data: bytes | bytearray | memoryview) -> int:
    """The Mercury CRC of LEN..DATA (at least two bytes, as every frame has)."""
    n = len(data)
    if n < 2:
        return crc_reference(bytes(data))
    return binascii.crc_hqx(data[: n - 2], _INIT_PRIME) ^ ((data[n - 2] << 8) | data[n - 1])


def encode_command(opcode: int, data: bytes = b"") -> bytes:
    """A host -> reader frame."""
    body = bytes((len(data), opcode)) + data
    return bytes((SOH,)) + body + crc(body).to_bytes(2, "big")


def encode_response(opcode: int, status: int = 0, data: bytes = b"") -> bytes:
    """A reader -> host frame."""
    body = bytes((len(data), opcode)) + status.to_bytes(2, "big") + data
    return bytes((SOH,)) + body + crc(body).to_bytes(2, "big")


class Frame(NamedTuple):
    """One frame, either direction; `status` is None for host -> reader frames.
    (Named tuples: the parser makes one per frame, and they are cheap to build.)"""

    opcode: int
    status: int | None
    data: bytes

    @property
    def is_keepalive(self) -> bool:
        return self.status == Status.NO_TAGS_FOUND and not self.data


class TagRead(NamedTuple):
    """One tag read as the reader reports it (opcode 0x22 data)."""

    epc: bytes
    rssi: int  # dBm, signed
    antenna: int  # the RX port (the low nibble of the antenna byte)
    frequency_khz: int
    timestamp_ms: int  # since the reader started this inventory
    phase: int  # degrees, 0..180
    protocol: int
    pc: int
    tag_crc: int
    tx_antenna: int = 0
    embedded: bytes = b""


def encode_tag_read(read: TagRead) -> bytes:
    """The DATA of a streamed 0x22 frame for one tag (SparkFun's documented layout)."""
    epc_bits = (len(read.epc) + 4) * 8  # PC + EPC + tag CRC
    return b"".join(
        (
            READ_PREFIX,
            (read.rssi & 0xFF).to_bytes(1, "big"),
            bytes(((read.tx_antenna or read.antenna) << 4 | read.antenna,)),
            read.frequency_khz.to_bytes(3, "big"),
            read.timestamp_ms.to_bytes(4, "big"),
            read.phase.to_bytes(2, "big"),
            bytes((read.protocol,)),
            (len(read.embedded) * 8).to_bytes(2, "big"),
            read.embedded,
            b"\x0f",  # reserved
            epc_bits.to_bytes(2, "big"),
            read.pc.to_bytes(2, "big"),
            read.epc,
            read.tag_crc.to_bytes(2, "big"),
        )
    )


# RSSI, antenna byte, frequency (3 bytes), timestamp, phase, protocol, embedded bits.
_READ_HEAD = struct.Struct(">bBBHIHBH")


def decode_tag_read(data: bytes) -> TagRead | None:
    """The tag in a streamed 0x22 frame's DATA, or None when the layout does not hold."""
    # Offsets are SparkFun's msg[] indices minus the 5 header bytes (FF LEN OP STATUS).
    size = len(data)
    if size < 24:
        return None
    rssi, ant, f_hi, f_lo, ts, phase, proto, embedded_bits = _READ_HEAD.unpack_from(data, 7)
    m = (embedded_bits + 7) >> 3
    at = 22 + m  # past the embedded data and the reserved byte
    if size < at + 2:
        return None
    epc_bits = (data[at] << 8) | data[at + 1]
    n = epc_bits >> 3  # PC + EPC + tag CRC
    if epc_bits & 7 or n < 4 or size != at + 2 + n:
        return None
    end = at + 2 + n
    return TagRead(
        data[at + 4 : end - 2], rssi, ant & 0x0F, (f_hi << 16) | f_lo, ts, phase, proto,
        (data[at + 2] << 8) | data[at + 3], (data[end - 2] << 8) | data[end - 1], ant >> 4,
        data[21 : 21 + m],
    )  # fmt: skip


@dataclass
class MercuryFramer(LengthFramer[Frame]):
    """Splits a byte stream into frames, resynchronising on the next 0xFF after garbage,
    a bad CRC or a truncated frame; never raises. `responses` picks the direction:
    True for what a reader sends, False for what a host sends (the simulator's side)."""

    responses: bool = True

    def feed(self, data: bytes) -> list[Frame]:
        # Counters live in locals inside the loop: it runs once per frame.
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        append = frames.append
        responses = self.responses
        overhead = 7 if responses else 5
        pos, n, ok, bad, skipped, framed = 0, len(buf), 0, 0, 0, 0
        crc_hqx, init = binascii.crc_hqx, _INIT_PRIME
        while True:
            start = buf.find(SOH, pos)
            if start < 0:
                skipped += n - pos
                pos = n
                break
            skipped += start - pos
            pos = start
            if n - pos < 2:
                break
            end = pos + buf[pos + 1] + overhead
            if end > n:
                break
            # crc() inlined: mercury(M || B) = crc_hqx(M, init') ^ B
            check = crc_hqx(buf[pos + 1 : end - 4], init) ^ ((buf[end - 4] << 8) | buf[end - 3])
            if check != (buf[end - 2] << 8) | buf[end - 1]:
                # A bad CRC, or a truncated frame whose LEN ran into the next one:
                # skip only this 0xFF so a real frame starting inside is still found.
                bad += 1
                pos += 1
                continue
            if responses:
                append(
                    Frame(
                        buf[pos + 2],
                        (buf[pos + 3] << 8) | buf[pos + 4],
                        bytes(buf[pos + 5 : end - 2]),
                    )
                )
            else:
                append(Frame(buf[pos + 2], None, bytes(buf[pos + 3 : end - 2])))
            ok += 1
            framed += end - pos
            pos = end
        del buf[:pos]
        self._tally(ok, bad, skipped, framed)
        return frames

"""Property-based fuzzing of every serial frame parser and the drivers' byte handling.

Each framer must never raise, and must account for every byte it was fed:
fed = bytes in good frames + bytes discarded + bytes still buffered. Valid frames with
garbage between them (garbage that holds no start-of-frame byte) are all recovered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import mercury, r2000
from edge.barcode import BarcodeFramer, BarcodeSettings
from edge.drivers import BarcodeDriver, Driver, MercuryDriver, R2000Driver

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- valid frames ---------------------------------------------------------------

mercury_responses = st.builds(
    mercury.encode_response,
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)
mercury_commands = st.builds(mercury.encode_command, st.integers(0, 255), st.binary(max_size=40))
r2000_frames = st.builds(
    r2000.encode, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)
)

# Scanner configurations as installed: AIM + CRLF, STX/ETX framing, bare CR.
BARCODE_SETTINGS = (
    BarcodeSettings(),
    BarcodeSettings(header=b"\x02", terminator=b"\x03", aim=False),
    BarcodeSettings(aim=False, terminator=b"\r"),
)
_CODE_TEXT = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=30)


def barcode_frame(cfg: BarcodeSettings, text: str) -> bytes:
    code = ("]E0" + text) if cfg.aim else text
    return cfg.header + code.encode() + cfg.terminator


# --- mutations ------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    """Valid frames, concatenated, then bit flips, insertions, deletions, truncation."""
    data = bytearray(b"".join(draw(st.lists(frames, min_size=1, max_size=6))))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "duplicate")))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":  # a piece sent twice (a stuttering line)
            data[at:at] = data[max(0, at - 10) : at]
    return bytes(data)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """The same bytes as a serial read() returns them: in pieces cut anywhere."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- framers under test -----------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """One framer kind: how to build it and how long a returned frame was on the wire."""

    name: str
    make: Callable[[], Any]
    frames: st.SearchStrategy[bytes]
    head: int | None  # start-of-frame byte (RFID), None for line-framed barcodes
    wire_size: Callable[[Any], int] | None  # bytes of a decoded frame on the wire


def _barcode_protocol(i: int, cfg: BarcodeSettings) -> Protocol:
    return Protocol(
        f"barcode-{i}",
        lambda: BarcodeFramer(cfg),
        _CODE_TEXT.map(lambda t: barcode_frame(cfg, t)),
        None,
        None,
    )


PROTOCOLS = (
    Protocol(
        "mercury-responses",
        lambda: mercury.MercuryFramer(responses=True),
        mercury_responses,
        mercury.SOH,
        lambda f: len(f.data) + 7,
    ),
    Protocol(
        "mercury-commands",
        lambda: mercury.MercuryFramer(responses=False),
        mercury_commands,
        mercury.SOH,
        lambda f: len(f.data) + 5,
    ),
    Protocol("r2000", r2000.R2000Framer, r2000_frames, r2000.HEAD, lambda f: len(f.data) + 5),
    *(_barcode_protocol(i, cfg) for i, cfg in enumerate(BARCODE_SETTINGS)),
)


def drain(framer: Any) -> list[Any]:
    """Feed everything, then give up partial frames as a driver does on a quiet line."""
    out: list[Any] = []
    resync = getattr(framer, "resync", None)
    while resync is not None and framer.buffered:
        out += resync()
    return out


def check_accounting(proto: Protocol, chunks: list[bytes]) -> list[Any]:
    framer = proto.make()
    frames: list[Any] = []
    fed = 0
    for chunk in chunks:
        frames += framer.feed(chunk)
        fed += len(chunk)
        assert fed == framer.bytes_framed + framer.bytes_discarded + framer.buffered
    frames += drain(framer)
    assert fed == framer.bytes_framed + framer.bytes_discarded + framer.buffered
    if proto.wire_size is not None:  # independent of the counters: sizes of what came out
        assert framer.bytes_framed == sum(proto.wire_size(f) for f in frames)
        assert framer.buffered == 0
    return frames


@FUZZ
@given(st.sampled_from(PROTOCOLS), st.lists(st.binary(max_size=80), max_size=12))
def test_random_bytes_never_raise_and_every_byte_is_accounted_for(
    proto: Protocol, chunks: list[bytes]
) -> None:
    """Any bytes in any pieces: no exception, fed = framed + discarded + buffered."""
    check_accounting(proto, chunks)


@FUZZ
@given(st.data(), st.sampled_from(PROTOCOLS))
def test_mutated_frames_never_raise_and_every_byte_is_accounted_for(
    data: st.DataObject, proto: Protocol
) -> None:
    """Valid frames with bits flipped, bytes inserted, deleted, cut short, split anywhere."""
    stream = data.draw(mutated(proto.frames))
    check_accounting(proto, data.draw(split(stream)))


@FUZZ
@given(st.data(), st.sampled_from(PROTOCOLS))
def test_valid_frames_in_any_pieces_are_all_recovered(data: st.DataObject, proto: Protocol) -> None:
    """Clean frames cut at arbitrary points decode exactly, with nothing discarded."""
    frames = data.draw(st.lists(proto.frames, min_size=1, max_size=8))
    stream = b"".join(frames)
    framer_out = check_accounting(proto, data.draw(split(stream)))
    reference = proto.make()
    expected = [reference.feed(f) for f in frames]
    assert framer_out == [x for group in expected for x in group]
    assert len(framer_out) == len(frames)


def _garbage(proto: Protocol) -> st.SearchStrategy[bytes]:
    """Noise between frames, as a line picks it up: no start-of-frame byte for RFID;
    for barcodes a broken line (a non-ASCII byte, no header) ended by the terminator."""
    if proto.head is not None:
        head = proto.head
        return st.binary(max_size=40).map(lambda b: bytes(x for x in b if x != head))
    cfg: BarcodeSettings = proto.make().settings
    banned = set(cfg.terminator + cfg.header + b"]")
    return st.binary(max_size=40).map(
        lambda b: bytes(x for x in b if x not in banned) + b"\xff" + cfg.terminator
    )


@FUZZ
@given(st.data(), st.sampled_from(PROTOCOLS))
def test_valid_frames_embedded_in_garbage_are_recovered(
    data: st.DataObject, proto: Protocol
) -> None:
    """Garbage before, between and after valid frames: every valid frame still comes out."""
    frames = data.draw(st.lists(proto.frames, min_size=1, max_size=6))
    garbage = _garbage(proto)
    stream = data.draw(garbage) + b"".join(f + data.draw(garbage) for f in frames)
    out = check_accounting(proto, data.draw(split(stream)))
    reference = proto.make()
    assert out == [x for f in frames for x in reference.feed(f)]


def test_accounting_counts_a_known_stream_exactly() -> None:
    """A worked example: garbage, a frame with a bad CRC, a good frame, a partial one."""
    good = mercury.encode_response(0x22, 0, b"\x01\x02\x03")
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    framer = mercury.MercuryFramer()
    frames = framer.feed(b"\x00\x01\x02" + bytes(bad) + good + good[:4])
    assert [f.data for f in frames] == [b"\x01\x02\x03"]
    assert framer.bytes_framed == len(good)
    assert framer.buffered == 4
    assert framer.bytes_discarded == 3 + len(bad)
    assert framer.frames_bad == 1


def test_barcode_overlong_line_is_discarded_and_counted() -> None:
    """A run longer than max_frame without terminator is dropped whole, and counted."""
    framer = BarcodeFramer(BarcodeSettings(max_frame=16))
    assert framer.feed(b"X" * 20) == []
    assert (framer.bytes_discarded, framer.buffered) == (20, 0)
    assert [r.code for r in framer.feed(b"]E0AB123\r\n")] == ["AB123"]
    assert framer.bytes_framed == 10


# --- drivers ----------------------------------------------------------------------


def _drivers() -> list[tuple[Driver, st.SearchStrategy[bytes]]]:
    mercury_driver = MercuryDriver()
    return [
        (mercury_driver, mercury_responses),
        (R2000Driver(), r2000_frames),
        (BarcodeDriver(BARCODE_SETTINGS[0]), PROTOCOLS[3].frames),
    ]


@FUZZ
@given(st.data(), st.integers(0, 2), st.booleans())
def test_drivers_survive_mutated_conversations(
    data: st.DataObject, which: int, streaming: bool
) -> None:
    """Drivers fed mutated device output, in pieces, with quiet gaps: reads or nothing,
    and their stats never count more discarded bytes than they were fed."""
    driver, frames = _drivers()[which]
    driver.on_open(0.0)
    if isinstance(driver, MercuryDriver):
        driver.streaming = streaming
    stream = data.draw(mutated(frames))
    t, fed = 0.0, 0
    for chunk in data.draw(split(stream)):
        t += 0.05
        fed += len(chunk)
        driver.feed(chunk, t)
        if data.draw(st.booleans()):
            t += 0.2
            driver.feed(b"", t)  # a quiet line: partial frames are given up
        driver.poll(t)
    assert 0 <= driver.stats.bytes_discarded <= fed
    driver.on_close()

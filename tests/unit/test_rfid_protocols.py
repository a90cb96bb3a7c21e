import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import mercury, r2000
from edge.drivers import MercuryDriver, MercurySettings, R2000Driver, R2000Settings, RfidRead
from edge.epc import decode_epc, sscc_to_epc_hex
from firmware_sim.rfid import gen2_crc

SSCC_EPC = "3174257BF4499602D2000000"


def _mercury_tag_frame(epc: bytes, rssi: int, antenna: int, ts_ms: int) -> bytes:
    """A streamed 0x22 read laid out field by field from the public (SparkFun) layout."""
    data = (
        bytes.fromhex("10 00 1B 01 FF 01 01")  # option, metadata flags, sub-op, flags, count
        + bytes([rssi & 0xFF, antenna << 4 | antenna])
        + (865_700).to_bytes(3, "big")  # frequency kHz
        + ts_ms.to_bytes(4, "big")
        + (90).to_bytes(2, "big")  # phase
        + bytes([0x05])  # Gen2
        + bytes([0x00, 0x00])  # no embedded data
        + bytes([0x0F])  # reserved
        + ((len(epc) + 4) * 8).to_bytes(2, "big")  # PC + EPC + CRC, in bits
        + bytes([0x30, 0x00])
        + epc
        + gen2_crc(bytes([0x30, 0x00]) + epc).to_bytes(2, "big")
    )
    body = bytes([len(data), 0x22, 0x00, 0x00]) + data
    return b"\xff" + body + mercury.crc_reference(body).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("frame", "opcode"),
    [(bytes.fromhex("FF 00 03 1D 0C"), 0x03), (bytes.fromhex("FF 00 0C 1D 03"), 0x0C)],
    ids=["get-version", "get-current-program"],
)
def test_mercury_crc_matches_the_published_vectors(frame: bytes, opcode: int) -> None:
    """Both the nibble-table reference and the fast CRC reproduce design.md's vectors."""
    assert mercury.crc_reference(frame[1:3]) == int.from_bytes(frame[3:], "big")
    assert mercury.encode_command(opcode) == frame


def test_fast_mercury_crc_equals_the_nibble_reference() -> None:
    """The crc_hqx shortcut gives the nibble algorithm's result on random inputs."""
    for n in range(2, 300, 7):
        data = os.urandom(n)
        assert mercury.crc(data) == mercury.crc_reference(data)


def test_mercury_tag_read_decodes_every_field() -> None:
    """A 0x22 read built from the public layout yields EPC, RSSI, antenna, time and CRCs."""
    epc = bytes.fromhex(SSCC_EPC)
    [frame] = mercury.MercuryFramer().feed(_mercury_tag_frame(epc, -61, 2, 1234))
    tag = mercury.decode_tag_read(frame.data)
    assert tag is not None
    assert (tag.epc, tag.rssi, tag.antenna, tag.timestamp_ms) == (epc, -61, 2, 1234)
    assert (tag.frequency_khz, tag.phase, tag.protocol, tag.pc) == (865_700, 90, 5, 0x3000)
    assert tag.tag_crc == gen2_crc(b"\x30\x00" + epc)
    assert mercury.encode_tag_read(tag) == frame.data


def test_mercury_keepalive_and_error_status_are_recognised() -> None:
    """LEN 0 with status 0x0400 is a keep-alive; another status is reported as an error."""
    driver = MercuryDriver()
    driver.on_open(0.0)
    keepalive = mercury.encode_response(0x22, 0x0400)
    error = mercury.encode_response(0x03, 0x0101)  # answer to the pending VERSION
    assert driver.feed(keepalive + error, 0.1) == []
    assert (driver.stats.keepalives, driver.stats.errors) == (1, 1)


def test_mercury_framer_resynchronises_after_garbage_bad_crc_truncation_and_splits() -> None:
    """Garbage, a bad CRC and a truncated frame are skipped and counted; good frames pass."""
    good = _mercury_tag_frame(bytes.fromhex(SSCC_EPC), -50, 1, 10)
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    stream = b"\x00\x13garbage" + good + bad_crc + good[:20] + good + b"\xff\xff" + good
    framer = mercury.MercuryFramer()
    frames = [f for b in stream for f in framer.feed(bytes([b]))]  # one byte at a time
    while framer.buffered:  # the line goes quiet: partial frames are given up
        frames += framer.resync()
    assert len(frames) == 3
    assert framer.frames_bad >= 2 and framer.bytes_skipped > 0


def test_mercury_driver_sets_up_the_reader_then_reads_and_stops() -> None:
    """The driver sends version, program, protocol, region, antennas, power, start, in
    order; reads stream after start; shutdown sends the stop command."""
    driver = MercuryDriver(MercurySettings(region="EU", antennas=(1, 2), power_dbm=25))
    sent = [driver.on_open(0.0)]
    for _ in range(7):
        op = mercury.MercuryFramer(responses=False).feed(sent[-1])[0]
        answer = b"\x02" if op.opcode == 0x0C else b""
        driver.feed(mercury.encode_response(op.opcode, 0, answer), 0.1)
        sent.append(driver.poll(0.1))
    opcodes = [mercury.MercuryFramer(responses=False).feed(s)[0].opcode for s in sent[:-1]]
    assert opcodes == [0x03, 0x0C, 0x93, 0x97, 0x91, 0x92, 0x2F]
    assert mercury.MercuryFramer(responses=False).feed(sent[5])[0].data == (2500).to_bytes(2, "big")
    assert driver.streaming
    reads = driver.feed(_mercury_tag_frame(bytes.fromhex(SSCC_EPC), -40, 2, 0), 0.2)
    assert reads == [RfidRead(SSCC_EPC, 2, -40, 0.2)]
    stop = mercury.MercuryFramer(responses=False).feed(driver.on_close())[0]
    assert (stop.opcode, stop.data) == (0x2F, mercury.STOP_CONTINUOUS)


def test_mercury_driver_counts_clock_skew_and_retries_silent_reader() -> None:
    """A device clock far off the host's is re-anchored and counted; no answer is retried."""
    driver = MercuryDriver(MercurySettings(max_clock_skew_s=1.0, response_timeout_s=0.5))
    first = driver.on_open(0.0)
    assert driver.poll(1.0) == first and driver.stats.timeouts == 1
    driver.streaming = True
    epc = bytes.fromhex(SSCC_EPC)
    driver.feed(_mercury_tag_frame(epc, -40, 1, 1000), 100.0)
    [read] = driver.feed(_mercury_tag_frame(epc, -40, 1, 60_000), 101.0)
    assert driver.stats.clock_skews == 1 and read.at == 101.0


def test_r2000_checksum_matches_the_published_vector() -> None:
    """Real-time inventory with one repeat encodes to A0 04 01 89 01 D1."""
    assert r2000.encode(0x01, 0x89, b"\x01") == bytes.fromhex("A0 04 01 89 01 D1")


def test_r2000_tag_and_round_end_frames_from_the_layout() -> None:
    """A tag frame (FreqAnt, PC, EPC, RSSI) and a 0x0A round end decode as laid out."""
    epc = bytes.fromhex(SSCC_EPC)
    body = bytes([0xA0, 3 + 16, 0x01, 0x89, (7 << 2) | 2, 0x30, 0x00]) + epc + bytes([98])
    tag_frame = body + bytes([(-sum(body)) & 0xFF])
    end_body = bytes([0xA0, 0x0A, 0x01, 0x89, 0x02, 0x00, 0x20, 0, 0, 0, 5])
    end_frame = end_body + bytes([(-sum(end_body)) & 0xFF])
    frames = r2000.R2000Framer().feed(tag_frame + end_frame)
    tag, end = (r2000.interpret(f) for f in frames)
    assert tag == r2000.TagRead(epc, 0x3000, -31, 3, 7)
    assert end == r2000.RoundEnd(3, 32, 5)
    assert r2000.encode_tag_read(1, tag) == tag_frame


def test_r2000_framer_resynchronises_and_counts() -> None:
    """Garbage, a bad checksum and a truncated frame are skipped; the good ones pass."""
    good = r2000.encode(1, 0x89, b"\x01")
    framer = r2000.R2000Framer()
    stream = b"\x01\x02" + good[:-1] + b"\x00" + good[:3] + good + b"zz" + good
    frames = [f for b in stream for f in framer.feed(bytes([b]))]
    assert len(frames) == 2 and framer.frames_bad >= 1 and framer.bytes_skipped > 0


def test_r2000_driver_reissues_inventory_after_each_round() -> None:
    """After a round ends the driver sets the next antenna and asks for another round."""
    driver = R2000Driver(R2000Settings(antennas=(1, 2)))
    out = driver.on_open(0.0)
    commands = []
    for _ in range(8):
        [cmd] = r2000.R2000Framer().feed(out)
        commands.append((cmd.command, cmd.data))
        if cmd.command == 0x89:
            answer = r2000.encode_round_end(1, r2000.RoundEnd(1, 0, 0))
        elif cmd.command == 0x72:
            answer = r2000.encode(1, 0x72, b"\x08\x01")
        else:
            answer = r2000.encode(1, cmd.command, b"\x10")
        driver.feed(answer, 0.1)
        out = driver.poll(0.1)
    assert commands[:2] == [(0x72, b""), (0x76, b"\x1e")]
    round_1, round_2 = [(0x74, b"\x00"), (0x89, b"\x01")], [(0x74, b"\x01"), (0x89, b"\x01")]
    assert commands[2:] == round_1 + round_2 + round_1
    assert driver.rounds == 3 and driver.firmware == "8.01"


@pytest.mark.parametrize(
    ("hex_", "uri", "key"),
    [
        (SSCC_EPC, "urn:epc:id:sscc:0614141.1234567890", "106141412345678908"),
        ("3074257BF7194E4000001A85", "urn:epc:id:sgtin:0614141.812345.6789", "80614141123458"),
        ("350000001000000200000003", "urn:epc:id:gid:1.0.8589934595", None),
    ],
    ids=["sscc-96", "sgtin-96", "gid-96"],
)
def test_epc_decoding_gives_uri_and_gs1_key(hex_: str, uri: str, key: str | None) -> None:
    """The design.md vectors decode to their pure-identity URIs and GS1 keys."""
    decoded = decode_epc(hex_)
    assert decoded is not None and (decoded.uri, decoded.gs1_key) == (uri, key)


@pytest.mark.parametrize(
    "hex_",
    ["E2801160600002054CC2096F", "ZZ", "31", ""],
    ids=["tid-like", "not-hex", "short", "empty"],
)
def test_undecodable_epcs_give_none(hex_: str) -> None:
    """Anything that is not SSCC-96, SGTIN-96 or GID-96 is None, never an exception."""
    assert decode_epc(hex_) is None


def test_sscc_encodes_to_the_vector_tag() -> None:
    """An SSCC with filter 3 encodes to design.md's SSCC-96 EPC."""
    assert sscc_to_epc_hex("106141412345678908", filter_value=3) == SSCC_EPC


def test_unknown_opcodes_are_counted_not_fatal() -> None:
    """A well-formed frame with an opcode the driver does not expect is counted."""
    driver = MercuryDriver()
    driver.on_open(0.0)
    assert driver.feed(mercury.encode_response(0x77, 0, b"\x01\x02"), 0.1) == []
    assert driver.stats.unknown == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_no_byte_sequence_crashes_a_driver(chunks: list[bytes]) -> None:
    """Whatever a device sends, in whatever pieces, the drivers return reads or nothing."""
    good = _mercury_tag_frame(bytes.fromhex(SSCC_EPC), -50, 1, 0)
    for driver in (MercuryDriver(), R2000Driver()):
        driver.on_open(0.0)
        if isinstance(driver, MercuryDriver):
            driver.streaming = True
        t = 0.0
        for chunk in [
            *chunks,
            good,
            r2000.encode_tag_read(1, r2000.TagRead(b"\x31" * 12, 0x3000, -40, 1, 0)),
        ]:
            t += 0.05
            driver.feed(chunk, t)
            driver.feed(b"", t + 0.2)  # quiet line: partial frames are given up
            driver.poll(t)

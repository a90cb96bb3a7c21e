import pytest

from edge.barcode import BarcodeFramer, BarcodeRead, BarcodeSettings, parse_gs1
from firmware_sim.barcode import ScannerFraming, code128, frame, noread_frame

STX_ETX = BarcodeSettings(header=b"\x02", terminator=b"\x03")


def test_crlf_frame_with_aim_identifier_gives_the_s10_number() -> None:
    """A Code 128 S10 label read with ]C0 yields the tracking id and symbology."""
    framer = BarcodeFramer()
    assert framer.feed(b"]C0RR473124829GB\r\n") == [
        BarcodeRead("RR473124829GB", "]C0", tracking_id="RR473124829GB")
    ]


def test_noread_string_is_an_event_not_an_error() -> None:
    """The configured no-read string becomes a no-read, counted as a good frame."""
    framer = BarcodeFramer()
    reads = framer.feed(b"NOREAD\r\n")
    assert reads == [BarcodeRead(None)] and reads[0].is_noread
    assert (framer.frames_ok, framer.frames_bad) == (1, 0)


def test_gs1_128_sscc_under_ai_00() -> None:
    """]C1 with AI 00 yields the SSCC from design.md's vector."""
    [read] = BarcodeFramer().feed(b"]C100106141412345678908\r\n")
    assert read.sscc == "106141412345678908" and read.symbology == "]C1"


def test_gs1_variable_fields_end_at_group_separator() -> None:
    """Variable-length AIs end at GS and parsing continues after it."""
    assert parse_gs1("420SW1A1AA\x1d00106141412345678908") == {
        "420": "SW1A1AA",
        "00": "106141412345678908",
    }


def test_frames_split_across_reads_are_reassembled() -> None:
    """Bytes arriving one at a time still make one frame."""
    framer = BarcodeFramer(STX_ETX)
    data = b"\x02]C0EE123456785CN\x03"
    reads = [r for b in data for r in framer.feed(bytes([b]))]
    assert [r.tracking_id for r in reads] == ["EE123456785CN"]


def test_garbage_is_skipped_and_counted_then_reading_resumes() -> None:
    """Line noise before a header and binary junk are counted as bad; good frames pass."""
    framer = BarcodeFramer(STX_ETX)
    reads = framer.feed(b"\xff\xfe\x02]C0RR473124829GB\x03\x02\x80\x81\x03\x02]C0EE123456785CN\x03")
    assert [r.tracking_id for r in reads] == ["RR473124829GB", "EE123456785CN"]
    assert framer.frames_bad == 2


def test_runaway_input_without_terminator_is_dropped() -> None:
    """More than max_frame bytes with no terminator is dropped, not buffered forever."""
    framer = BarcodeFramer()
    framer.feed(b"A" * 600)
    assert framer.frames_bad == 1
    assert [r.code for r in framer.feed(b"]C0RR473124829GB\r\n")] == ["RR473124829GB"]


def test_several_codes_per_trigger() -> None:
    """A scanner configured to join codes sends several reads in one frame."""
    framer = BarcodeFramer(BarcodeSettings(separator=";"))
    reads = framer.feed(b"]C0RR473124829GB;]C100106141412345678908\r\n")
    assert [r.tracking_id for r in reads] == ["RR473124829GB", None]
    assert reads[1].sscc == "106141412345678908"


@pytest.mark.parametrize(
    "framing",
    [ScannerFraming(), ScannerFraming(b"\x02", b"\x03"), ScannerFraming(aim=False)],
    ids=["crlf-aim", "stx-etx", "no-aim"],
)
def test_simulated_frames_parse_back(framing: ScannerFraming) -> None:
    """What firmware_sim sends, the edge framer decodes, for each framing."""
    framer = BarcodeFramer(BarcodeSettings(framing.header, framing.terminator, framing.aim))
    data = frame([code128("RR473124829GB")], framing) + noread_frame(framing)
    reads = framer.feed(data)
    assert [r.tracking_id for r in reads] == ["RR473124829GB", None]
    assert reads[1].is_noread


def test_truncated_frame_glued_to_the_next_is_cut_at_its_aim_prefix() -> None:
    """A code cut short (no terminator) does not spoil the next one: resync on ']'."""
    framer = BarcodeFramer()
    reads = framer.feed(b"]C0RR4731]C0EE123456785CN\r\n")
    assert [r.tracking_id for r in reads] == ["EE123456785CN"] and framer.frames_bad == 1

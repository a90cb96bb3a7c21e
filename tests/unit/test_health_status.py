"""Device health and agent status: the encoders the edge uses and the decoders ingest uses."""

from datetime import UTC, datetime

import pytest

from parceltrack import topics
from parceltrack.errors import WireFormatError
from parceltrack.health import decode_health, decode_status, encode_health, encode_status

NOW = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def test_health_round_trip_keeps_known_fields_and_driver_counters() -> None:
    """A health message encoded for a device decodes to the same device, time and counters."""
    payload = encode_health(
        "scan-1", NOW, True, read_point="LHR1-TUN1", frames_ok=7, outbox_depth=3,
        outbox_oldest_s=1.5, keepalives=4, firmware=None,
    )  # fmt: skip
    report = decode_health(topics.health("LHR1", "scan-1"), payload, NOW)
    assert (report.site, report.device, report.reported_at, report.connected) == (
        "LHR1", "scan-1", NOW, True,
    )  # fmt: skip
    assert {"read_point": "LHR1-TUN1", "frames_ok": 7, "outbox_depth": 3}.items() <= (
        report.body.items()
    )
    assert (report.body["keepalives"], report.body["firmware"]) == (4, None)


def test_status_round_trip_with_since() -> None:
    """An online status encoded with its time decodes to that agent, state and time."""
    status = decode_status(
        topics.agent_status("LHR1", "agent-1"), encode_status("online", NOW), NOW
    )
    assert (status.site, status.agent, status.state, status.since, status.since_known) == (
        "LHR1", "agent-1", "online", NOW, True,
    )  # fmt: skip


def test_last_will_round_trip_has_no_since() -> None:
    """The Last Will is encoded without a time, so the decoder takes the arrival time."""
    status = decode_status(topics.agent_status("LHR1", "agent-1"), encode_status("offline"), NOW)
    assert (status.state, status.since, status.since_known) == ("offline", NOW, False)


def test_health_on_a_status_topic_is_refused() -> None:
    """A health payload published on another kind of topic is a wire format error."""
    with pytest.raises(WireFormatError, match="health"):
        decode_health(topics.agent_status("LHR1", "scan-1"), encode_health("scan-1", NOW, True))

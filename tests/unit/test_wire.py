import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from ingest.store import batch_rows, scan_row
from parceltrack import topics
from parceltrack.errors import WireFormatError
from parceltrack.events import EventKind, ScanEvent
from parceltrack.wire import (
    decode_batch,
    encode_batch,
    json_schema,
    published_schema,
)

NOW = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
TOPIC = topics.events("LHR1", "scan-1")


def _event(seq: int = 0, **kw: object) -> ScanEvent:
    base: dict[str, object] = dict(
        device="scan-1",
        boot=1_790_000_000,
        seq=seq,
        ts=NOW,
        site="LHR1",
        read_point="LHR1-TUN1",
        kind=EventKind.READ,
        code="RR473124829GB",
        symbology="]C0",
        tracking_id="RR473124829GB",
    )
    base.update(kw)
    return ScanEvent(**base)  # type: ignore[arg-type]


def _payload(**batch: object) -> bytes:
    body = json.loads(encode_batch("LHR1", "scan-1", "agent-1", [_event()]))
    body.update(batch)
    return json.dumps(body).encode()


def test_round_trip_keeps_every_field_and_microseconds() -> None:
    """Encoding then decoding gives the ingest the same rows as the events it was given,
    timestamps to the microsecond."""
    events = [
        _event(0),
        _event(
            1,
            kind=EventKind.NOREAD,
            code=None,
            tracking_id=None,
            symbology=None,
            rssi=-61.5,
            antenna=2,
            read_count=7,
        ),
    ]
    payload = encode_batch("LHR1", "scan-1", "agent-1", events)
    rows, _, _ = batch_rows(decode_batch(TOPIC, payload, NOW))
    assert rows == [scan_row(e) for e in events]


def test_published_schema_file_matches_the_models() -> None:
    """The committed JSON Schema is exactly what the validating models generate."""
    assert published_schema() == json.loads(json.dumps(json_schema()))


def test_encoded_payloads_validate_against_the_published_schema() -> None:
    """What the edge sends passes the published JSON Schema with a generic validator."""
    payload = json.loads(encode_batch("LHR1", "scan-1", "agent-1", [_event(0), _event(1)]))
    jsonschema.validate(payload, published_schema())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (_payload(v=2), "v:"),
        (_payload(events=[]), "events"),
        (_payload(site="LHR2"), "published on"),
        (_payload(extra=1), "extra"),
        (_payload(events=[{"id": "scan-1:1:0"}]), "events.0"),
        (b"x" * 2_000_000, "exceeds"),
    ],
    ids=[
        "malformed-json",
        "unknown-version",
        "no-events",
        "topic-mismatch",
        "unknown-field",
        "missing-fields",
        "oversize",
    ],
)
def test_invalid_payloads_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    """Every kind of bad payload raises WireFormatError naming what is wrong."""
    with pytest.raises(WireFormatError, match=reason):
        decode_batch(TOPIC, payload, NOW)


@pytest.mark.parametrize(
    "shift", [timedelta(days=365), -timedelta(days=400)], ids=["far-future", "far-past"]
)
def test_impossible_timestamps_are_refused(shift: timedelta) -> None:
    """A read from the far future or from before any outbox could hold it is refused."""
    payload = encode_batch("LHR1", "scan-1", "agent-1", [_event(ts=NOW + shift)])
    with pytest.raises(WireFormatError, match="impossible timestamp"):
        decode_batch(TOPIC, payload, NOW)


def test_event_id_must_be_built_from_device_boot_and_sequence() -> None:
    """An id that does not match device:boot:seq is refused."""
    body = json.loads(encode_batch("LHR1", "scan-1", "agent-1", [_event()]))
    body["events"][0]["id"] = "scan-2:1:0"
    with pytest.raises(WireFormatError, match="event id"):
        decode_batch(TOPIC, json.dumps(body).encode(), NOW)


def test_wrong_topic_shape_is_refused() -> None:
    """A payload on a topic that is not an events topic is refused."""
    with pytest.raises(WireFormatError, match="topic"):
        decode_batch(topics.health("LHR1", "scan-1"), _payload(), NOW)


def test_broker_urls_parse_with_tls_and_never_show_the_password() -> None:
    """mqtts:// turns TLS on with port 8883; the repr hides the password."""
    from parceltrack.config import BrokerAddress

    plain = BrokerAddress.from_url("mqtt://agent-1:s3cret@broker:1884")
    secure = BrokerAddress.from_url("mqtts://agent-1:s3cret@broker")
    assert (plain.port, plain.tls, plain.password) == (1884, False, "s3cret")
    assert (secure.port, secure.tls) == (8883, True)
    assert "s3cret" not in repr(secure)


def test_a_broker_url_given_to_the_settings_keeps_their_ca_file() -> None:
    """Settings.broker(url) connects to that URL instead, with the settings' CA file."""
    from parceltrack.config import Settings

    settings = Settings(mqtt_url="mqtts://env-broker", mqtt_ca_file="/etc/ca.pem")
    toml = settings.broker("mqtts://toml-broker:8884")
    assert (toml.host, toml.port, toml.tls, toml.ca_file) == (
        "toml-broker",
        8884,
        True,
        "/etc/ca.pem",
    )
    assert settings.broker().host == "env-broker"


def test_bad_broker_url_is_a_clear_error_without_the_password() -> None:
    """A URL with the wrong scheme is refused, and the message hides its password."""
    from parceltrack.config import BrokerAddress
    from parceltrack.errors import ConfigError

    with pytest.raises(ConfigError, match="mqtt://host") as err:
        BrokerAddress.from_url("http://agent-1:s3cret@broker")
    assert "s3cret" not in str(err.value)

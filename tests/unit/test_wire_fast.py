"""The wire format's fast lane (msgspec Structs generated from the pydantic models)
accepts exactly what the models accept, with the same values, and leaves every
refusal, message included, to the models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.store import batch_rows
from parceltrack.events import EventKind, ScanEvent
from parceltrack.wire import ScanBatch, WireEvent, describe_error, encode_batch, validate_batch

NOW = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def _base() -> dict[str, Any]:
    events = [
        ScanEvent(
            device="scan-1", boot=9, seq=i, ts=NOW, site="LHR1", read_point="LHR1-TUN1",
            kind=EventKind.READ, code="RR473124829GB", symbology="]C0",
            tracking_id="RR473124829GB", rssi=-60.5, antenna=1,
        )
        for i in range(3)
    ]  # fmt: skip
    body: dict[str, Any] = json.loads(encode_batch("LHR1", "scan-1", "agent-1", events))
    return body


def _outcome(decode: Any, payload: bytes) -> tuple[str, Any]:
    """('rows', the ingest's rows) or ('refused', the reason the ingest would store)."""
    try:
        rows = batch_rows(decode(payload))[0]
    except ValidationError as exc:
        return "refused", describe_error(exc)
    # Instants in UTC (the lanes' tzinfo objects differ, not the times); floats by repr,
    # so a NaN equals a NaN.
    return "rows", [
        tuple(
            v.astimezone(UTC).isoformat() if isinstance(v, datetime)
            else repr(v) if isinstance(v, float) else v
            for v in row
        )
        for row in rows
    ]  # fmt: skip


def _edited(event: int | None, field: str, value: Any) -> bytes:
    body = _base()
    (body if event is None else body["events"][event])[field] = value
    return json.dumps(body).encode()


EDGES: dict[str, bytes] = {
    "valid": json.dumps(_base()).encode(),
    "whole float for an int": _edited(0, "boot", 9.0),
    "bool for a float": _edited(0, "rssi", True),
    "numeric string for an int": _edited(0, "seq", "0"),
    "space in the timestamp": _edited(0, "ts", "2026-11-24 10:00:00Z"),
    "lower-case t and z": _edited(0, "ts", "2026-11-24t10:00:00.5z"),
    "seven fraction digits": _edited(0, "ts", "2026-11-24T10:00:00.1234567Z"),
    "leap second": _edited(0, "ts", "2016-12-31T23:59:60Z"),
    "offset timestamp": _edited(1, "ts", "2026-11-24T12:00:00.000001+02:00"),
    "unix time": _edited(0, "ts", 1790000000),
    "naive timestamp": _edited(0, "ts", "2026-11-24T10:00:00"),
    "final newline in a tracking id": _edited(0, "tracking_id", "RR473124829GB\n"),
    "final newline in a name": _edited(None, "site", "LHR1\n"),
    "arabic digits in a tracking id": _edited(
        0, "tracking_id", "RR" + "".join(chr(0x660 + int(d)) for d in "473124829") + "GB"
    ),
    "symbology without bracket": _edited(0, "symbology", "C0"),
    "antenna above 64": _edited(0, "antenna", 65),
    "read count zero": _edited(0, "read_count", 0),
    "code of 257 characters": _edited(0, "code", "x" * 257),
    "code of 256 characters": _edited(0, "code", "x" * 256),
    "explicit nulls": _edited(0, "epc", None),
    "unknown event field": _edited(0, "colour", "red"),
    "version true": _edited(None, "v", True),
    "version 2": _edited(None, "v", 2),
    "kind upper case": _edited(0, "kind", "READ"),
    "direction out": _edited(0, "direction", "out"),
    "direction up": _edited(0, "direction", "up"),
    "huge integer": _edited(0, "seq", 10**30),
    "huge float": _edited(0, "rssi", 10**30),
    "float overflowing": json.dumps(_base()).encode().replace(b"-60.5", b"1e400", 1),
    "escaped timestamp": json.dumps(_base()).encode().replace(b"10:00:00.", b"10:00:00\\u002e", 1),
    "escaped code": _edited(0, "code", "RR\u00e9"),
    "NaN rssi": _edited(0, "rssi", float("nan")),
    "duplicate key": json.dumps(_base()).encode()[:-1] + b',"agent":"agent-2"}',
    "deeply nested": b"[" * 5000 + b"]" * 5000,
    "not UTF-8": b"\xff\xfe{",
}


@pytest.mark.parametrize("payload", list(EDGES.values()), ids=list(EDGES))
def test_fast_lane_decides_as_the_models_do(payload: bytes) -> None:
    """Accepted with the same rows, or refused with the same reason, as by the models."""
    assert _outcome(validate_batch, payload) == _outcome(ScanBatch.model_validate_json, payload)


def test_the_models_check_nothing_the_generated_structs_do_not() -> None:
    """The lane is generated from fields and constraints; validators are not carried
    over, so the only one (`_aware`: timestamps carry an offset, msgspec's tz=True) is
    pinned here: a new validator fails this test until the lane enforces it too."""
    validators = WireEvent.__pydantic_decorators__.field_validators
    assert {name: set(v.info.fields) for name, v in validators.items()} == {
        "_aware": {"ts", "first_seen", "last_seen"}
    }
    assert not ScanBatch.__pydantic_decorators__.field_validators
    for model in (WireEvent, ScanBatch):
        assert not model.__pydantic_decorators__.model_validators


def test_a_valid_batch_takes_the_fast_lane() -> None:
    """A valid batch decodes to the generated Struct, not to the (slower) model."""
    batch = validate_batch(EDGES["valid"])
    assert type(batch).__name__ == "FastScanBatch"
    assert not isinstance(batch, ScanBatch)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = st.sampled_from(
    ["id", "boot", "seq", "ts", "read_point", "kind", "code", "symbology", "tracking_id",
     "epc", "rssi", "antenna", "read_count", "first_seen", "last_seen", "direction"]
)  # fmt: skip
TEXTS = st.sampled_from(
    ["RR473124829GB", "LHR1-TUN1", "]C0", "read", "seen", "in", "2026-11-24T10:00:00Z",
     "2026-11-24T10:00:00+01:00", "", "x" * 300, "a b"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(event=st.integers(0, 2), field=FIELDS, value=JSON | TEXTS)
def test_any_single_field_change_is_decided_alike(event: int, field: str, value: Any) -> None:
    """Whatever value one event field gets, both lanes give the same rows or reason."""
    payload = _edited(event, field, value)
    assert _outcome(validate_batch, payload) == _outcome(ScanBatch.model_validate_json, payload)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["v", "site", "device", "agent", "events"]), value=JSON | TEXTS)
def test_any_batch_field_change_is_decided_alike(field: str, value: Any) -> None:
    """Whatever value one batch field gets, both lanes give the same rows or reason."""
    payload = _edited(None, field, value)
    assert _outcome(validate_batch, payload) == _outcome(ScanBatch.model_validate_json, payload)

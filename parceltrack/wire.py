"""Wire format v1: batches of scan events as JSON on parceltrack/v1/{site}/{device}/events.

The pydantic models below are the single source of the JSON Schema committed at
parceltrack/schemas/scan-batch-v1.json (a test keeps the two equal), so the
ingest validates exactly what the documentation publishes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parceltrack import topics
from parceltrack.errors import WireFormatError
from parceltrack.events import EventKind, ScanEvent, event_id

VERSION = 1
MAX_PAYLOAD_BYTES = 1_048_576
MAX_EVENTS_PER_BATCH = 5_000
# Edge outboxes replay events up to their age bound; anything older is not a replay.
MAX_EVENT_AGE = timedelta(days=30)
# Device clocks drift; a read from further ahead than this is an impossible timestamp.
MAX_CLOCK_AHEAD = timedelta(minutes=5)

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireEvent(_Strict):
    """One scan event inside a batch."""

    id: Annotated[str, Field(description="'{device}:{boot}:{seq}', unique world-wide")]
    boot: Annotated[int, Field(ge=0, description="boot epoch of the agent, Unix seconds")]
    seq: Annotated[int, Field(ge=0, description="sequence number within the boot")]
    ts: Annotated[datetime, Field(description="UTC time of the read, RFC 3339, microseconds")]
    read_point: Name
    kind: EventKind
    code: Annotated[str | None, Field(max_length=256)] = None
    symbology: Annotated[str | None, Field(pattern=r"^\][A-Za-z0-9][0-9A-Za-z]$")] = None
    tracking_id: Annotated[str | None, Field(pattern=r"^[A-Z]{2}\d{9}[A-Z]{2}$")] = None
    epc: Annotated[str | None, Field(max_length=128)] = None
    rssi: float | None = None
    antenna: Annotated[int | None, Field(ge=0, le=64)] = None
    read_count: Annotated[int, Field(ge=1)] = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    direction: Literal["in", "out"] | None = None

    @field_validator("ts", "first_seen", "last_seen")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamp must carry a UTC offset, e.g. 2026-11-24T10:00:00Z")
        return value


class ScanBatch(_Strict):
    """A batch of scan events from one device, published as one MQTT message."""

    v: Literal[1]
    site: Name
    device: Name
    agent: Name
    events: Annotated[list[WireEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a scan batch, as published in the repository."""
    schema = ScanBatch.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://parceltrack.example/schemas/scan-batch-v1.json"
    return schema


def published_schema() -> dict[str, Any]:
    """The committed schema file (parceltrack/schemas/scan-batch-v1.json)."""
    text = resources.files("parceltrack").joinpath("schemas/scan-batch-v1.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat(timespec="microseconds")


def encode_batch(site: str, device: str, agent: str, events: Sequence[ScanEvent]) -> bytes:
    """Serialise events of one device into a wire-format v1 payload."""
    body = {
        "v": VERSION,
        "site": site,
        "device": device,
        "agent": agent,
        "events": [_event_dict(e) for e in events],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _event_dict(e: ScanEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "boot": e.boot,
        "seq": e.seq,
        "ts": _iso(e.ts),
        "read_point": e.read_point,
        "kind": e.kind.value,
    }
    optional = {
        "code": e.code,
        "symbology": e.symbology,
        "tracking_id": e.tracking_id,
        "epc": e.epc,
        "rssi": e.rssi,
        "antenna": e.antenna,
        "first_seen": _iso(e.first_seen),
        "last_seen": _iso(e.last_seen),
        "direction": e.direction,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if e.read_count != 1:
        out["read_count"] = e.read_count
    return out


def decode_batch(topic: str, payload: bytes, now: datetime | None = None) -> ScanBatch:
    """Validate a payload received on `topic`; raise WireFormatError saying what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireFormatError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    where = topics.parse_events_topic(topic)
    if where is None:
        raise WireFormatError(f"topic {topic!r} is not parceltrack/v1/{{site}}/{{device}}/events")
    try:
        batch = ScanBatch.model_validate_json(payload)
    except ValidationError as exc:
        raise WireFormatError(describe_error(exc)) from exc
    if (batch.site, batch.device) != where:
        raise WireFormatError(
            f"batch names site {batch.site!r} device {batch.device!r} "
            f"but was published on {topic!r}"
        )
    _check_events(batch, now or datetime.now(UTC))
    return batch


def _check_events(batch: ScanBatch, now: datetime) -> None:
    earliest, latest = now - MAX_EVENT_AGE, now + MAX_CLOCK_AHEAD
    for e in batch.events:
        if e.id != event_id(batch.device, e.boot, e.seq):
            raise WireFormatError(f"event id {e.id!r} is not '{{device}}:{{boot}}:{{seq}}'")
        if not earliest <= e.ts <= latest:
            raise WireFormatError(f"event {e.id} has an impossible timestamp {e.ts.isoformat()}")


def describe_error(exc: ValidationError) -> str:
    """The first validation error, with where it is, and how many more there are."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def event_json(e: ScanEvent) -> str:
    """One event exactly as it appears inside a batch. The edge outbox stores this, so
    a replay joins stored texts instead of decoding and encoding every event again."""
    return json.dumps(_event_dict(e), separators=(",", ":"))


def encode_batch_texts(site: str, device: str, agent: str, event_texts: Sequence[str]) -> bytes:
    """The same payload as encode_batch, from events already serialised by event_json."""
    head = json.dumps(
        {"v": VERSION, "site": site, "device": device, "agent": agent}, separators=(",", ":")
    )
    return (head[:-1] + ',"events":[' + ",".join(event_texts) + "]}").encode()

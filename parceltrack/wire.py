"""Wire format v1: batches of scan events as JSON on parceltrack/v1/{site}/{device}/events.

The pydantic models below are the single source of the JSON Schema committed at
parceltrack/schemas/scan-batch-v1.json (a test keeps the two equal), so the
ingest validates exactly what the documentation publishes.

Validation has two lanes (issue 17). msgspec Structs *generated from those models*
(same fields, defaults and constraints; `_fast_struct`) decode a valid batch about
4-5x faster than pydantic (docs/performance.md). They are strict: whatever they
refuse, including the lax inputs pydantic accepts (a whole float for an integer, a
space in a timestamp), goes to the pydantic model, which accepts it or refuses it
with the message it always gave. So every acceptance and every refusal, message
included, is what the models alone decide; tests/unit/test_wire_fast.py holds the lanes to that.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal, cast

import msgspec
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


# -- the fast lane: msgspec Structs generated from the models above ---------------------

_LIMITS = ("ge", "le", "min_length", "max_length")


def _fast_type(annotation: Any, metadata: Sequence[Any], structs: dict[type, Any]) -> Any:
    """The msgspec type of one model field: the same type with the same limits (its
    pattern, if any, is checked by `_patterns`)."""
    for m in metadata:
        if not any(getattr(m, k, None) is not None for k in (*_LIMITS, "pattern")):
            # A constraint the lane would not enforce would make it laxer than the model.
            raise TypeError(f"wire fast lane: no msgspec equivalent for {m!r}")
    limits = {k: getattr(m, k) for m in metadata for k in _LIMITS if hasattr(m, k)}
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1, annotation
        return _fast_type(inner[0], metadata, structs) | None
    if typing.get_origin(annotation) is list:
        annotation = list[_fast_type(args[0], (), structs)]  # type: ignore[misc]
    elif annotation in structs:
        annotation = structs[annotation]
    elif annotation is datetime:
        limits["tz"] = True  # the models' `_aware` validator: an offset is required
    return Annotated[annotation, msgspec.Meta(**limits)] if limits else annotation


def _patterns(model: type[BaseModel]) -> list[tuple[str, re.Pattern[str]]]:
    """(field, regex) of the model's patterned fields. msgspec would run each pattern
    once per event from Python; checking each distinct value once is 3-5x cheaper
    (read points repeat within a batch)."""
    return [
        (name, re.compile(m.pattern))
        for name, info in model.model_fields.items()
        for m in info.metadata
        if getattr(m, "pattern", None)
    ]


def _fast_struct(model: type[BaseModel], structs: dict[type, Any]) -> Any:
    fields = []
    for name, info in model.model_fields.items():
        kind = _fast_type(info.annotation, info.metadata, structs)
        fields.append((name, kind) if info.is_required() else (name, kind, info.default))
    # gc=False: they hold only strings, numbers, times and lists of themselves (no
    # cycles), and the ingest makes a hundred thousand a second: untracked, the
    # garbage collector neither counts nor walks them.
    structs[model] = msgspec.defstruct(
        f"Fast{model.__name__}",
        fields,
        kw_only=True,
        frozen=True,
        forbid_unknown_fields=True,
        gc=False,
    )
    return structs[model]


_FAST: dict[type, Any] = {}
_fast_struct(WireEvent, _FAST)
_fast_decode = msgspec.json.Decoder(_fast_struct(ScanBatch, _FAST)).decode
_BATCH_PATTERNS, _EVENT_PATTERNS = _patterns(ScanBatch), _patterns(WireEvent)
# msgspec rounds a seventh fraction digit where pydantic truncates; such times (and any
# JSON unicode escape, which could spell one) go to the models. The edge writes six.
_SUBMICRO, _ESCAPE = re.compile(rb"\.[0-9]{7}"), re.compile(rb"\\u")


def _matches(batch: Any) -> bool:
    """Whether every patterned field matches. `fullmatch`: the models' `$` is the very
    end (Python's `$` alone would also allow a final newline)."""
    for name, rx in _BATCH_PATTERNS:
        if rx.fullmatch(getattr(batch, name)) is None:
            return False
    for name, rx in _EVENT_PATTERNS:
        values = {getattr(e, name) for e in batch.events}
        values.discard(None)
        if not all(map(rx.fullmatch, values)):
            return False
    return True


def validate_batch(payload: bytes) -> ScanBatch:
    """The payload as a batch: msgspec's Struct when it passes, else pydantic's model,
    which raises its ValidationError for what it refuses."""
    if _SUBMICRO.search(payload) or _ESCAPE.search(payload):
        return ScanBatch.model_validate_json(payload)
    try:
        fast = _fast_decode(payload)
    except msgspec.MsgspecError:
        return ScanBatch.model_validate_json(payload)
    if not _matches(fast):
        return ScanBatch.model_validate_json(payload)
    # The generated Struct has exactly the model's fields, typed alike.
    return cast(ScanBatch, fast)


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
        batch = validate_batch(payload)
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

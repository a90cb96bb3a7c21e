"""Commit receipts, wire format v1: the ingest tells an agent which events are committed.

After each commit an ingest worker publishes, per device and boot, the ranges of
sequence numbers that the database now holds (written, already stored as
duplicates, or kept in a dead letter) on `parceltrack/v1/{site}/{device}/receipts`,
QoS 1, retained. The edge keeps an event in its outbox until a receipt covers it,
so a read leaves the edge only after the database has committed it
(docs/reliability.md). The pydantic model below is the source of the JSON Schema
committed at parceltrack/schemas/receipt-v1.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parceltrack import topics, wire
from parceltrack.errors import WireFormatError

VERSION = 1
# A commit of a few hundred messages per device makes a few ranges; replays with
# holes make more. Past this a receipt is split (the edge applies each one alone).
MAX_RANGES = 1_000

Seq = Annotated[int, Field(ge=0)]
SeqRange = tuple[int, int]  # first and last sequence number, both included


class ReceiptMessage(BaseModel):
    """A receipt as published: ranges of one device's boot that are committed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    site: wire.Name
    device: wire.Name
    boot: Annotated[int, Field(ge=0, description="the agent's boot epoch of these events")]
    ranges: Annotated[
        list[tuple[Seq, Seq]],
        Field(
            min_length=1,
            max_length=MAX_RANGES,
            description="[first, last] sequence numbers committed, both included",
        ),
    ]
    ts: Annotated[datetime, Field(description="when the ingest committed them, RFC 3339")]

    @model_validator(mode="after")
    def _ordered(self) -> ReceiptMessage:
        for i, (first, last) in enumerate(self.ranges):
            if first > last:
                raise ValueError(f"ranges.{i}: first {first} is after last {last}")
        return self


@dataclass(frozen=True, slots=True)
class Receipt:
    site: str
    device: str
    boot: int
    ranges: tuple[SeqRange, ...]

    def covers(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.ranges)

    @property
    def events(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


def ranges_of(seqs: Iterable[int]) -> tuple[SeqRange, ...]:
    """Sorted, merged [first, last] runs of the sequence numbers (duplicates allowed)."""
    return merge_ranges((seq, seq) for seq in seqs)


def merge_ranges(ranges: Iterable[SeqRange]) -> tuple[SeqRange, ...]:
    """Sorted ranges with overlapping and adjacent ones joined."""
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return tuple((first, last) for first, last in out)


def ranges_by_boot(boots: Sequence[int], seqs: Sequence[int]) -> dict[int, tuple[SeqRange, ...]]:
    """The ranges per boot of one message's events, given their boots and sequence
    numbers side by side. The usual message (one boot, consecutive numbers, as the
    edge publishes them) takes the fast path, without a look at each number."""
    if not seqs:
        return {}
    first = seqs[0]
    if boots.count(boots[0]) == len(boots) and list(seqs) == list(range(first, first + len(seqs))):
        return {boots[0]: ((first, seqs[-1]),)}
    per_boot: dict[int, list[int]] = {}
    for boot, seq in zip(boots, seqs, strict=True):
        per_boot.setdefault(boot, []).append(seq)
    return {boot: ranges_of(numbers) for boot, numbers in per_boot.items()}


Committed = tuple[str, str, int, Sequence[SeqRange]]  # site, device, boot, ranges


def receipts_for(committed: Iterable[Committed]) -> list[Receipt]:
    """One receipt per (site, device, boot) of what a commit covers, ranges merged,
    split so that none has more than MAX_RANGES ranges."""
    groups: dict[tuple[str, str, int], list[SeqRange]] = {}
    for site, device, boot, ranges in committed:
        groups.setdefault((site, device, boot), []).extend(ranges)
    out: list[Receipt] = []
    for (site, device, boot), parts in groups.items():
        ranges = merge_ranges(parts)
        for i in range(0, len(ranges), MAX_RANGES):
            out.append(Receipt(site, device, boot, ranges[i : i + MAX_RANGES]))
    return out


def encode_receipt(receipt: Receipt, committed_at: datetime) -> bytes:
    body = {
        "v": VERSION,
        "site": receipt.site,
        "device": receipt.device,
        "boot": receipt.boot,
        "ranges": [list(r) for r in receipt.ranges],
        "ts": committed_at.isoformat(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_receipt(topic: str, payload: bytes) -> Receipt:
    """Validate a receipt received on `topic`; raise WireFormatError saying what is wrong."""
    where = topics.parse_receipts_topic(topic)
    if where is None:
        raise WireFormatError(f"topic {topic!r} is not parceltrack/v1/{{site}}/{{device}}/receipts")
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        raise WireFormatError(f"payload of {len(payload)} bytes exceeds {wire.MAX_PAYLOAD_BYTES}")
    try:
        msg = ReceiptMessage.model_validate_json(payload)
    except ValidationError as exc:
        raise WireFormatError(wire.describe_error(exc)) from exc
    if (msg.site, msg.device) != where:
        raise WireFormatError(
            f"receipt names site {msg.site!r} device {msg.device!r} but was published on {topic!r}"
        )
    return Receipt(msg.site, msg.device, msg.boot, tuple(msg.ranges))


def event_seqs(payload: bytes) -> list[tuple[int, int]]:
    """(boot, seq) of every event a scan batch payload names, read leniently.

    For a message the ingest dead-lettered: the database keeps its raw bytes, so
    its events are committed too, and the edge must stop sending them. Whatever
    cannot be read as integers is skipped (the edge quarantines such rows itself).
    """
    try:
        body = json.loads(payload)
        events = body.get("events") if isinstance(body, dict) else None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json can parse
        return []
    out: list[tuple[int, int]] = []
    for e in events if isinstance(events, list) else []:
        if isinstance(e, dict):
            boot, seq = e.get("boot"), e.get("seq")
            if type(boot) is int and type(seq) is int and boot >= 0 and seq >= 0:
                out.append((boot, seq))
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a receipt, as published in the repository."""
    schema = ReceiptMessage.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://parceltrack.example/schemas/receipt-v1.json"
    return schema


def published_schema() -> dict[str, Any]:
    """The committed schema file (parceltrack/schemas/receipt-v1.json)."""
    text = resources.files("parceltrack").joinpath("schemas/receipt-v1.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded

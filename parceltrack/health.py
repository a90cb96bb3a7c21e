"""Wire format v1 of device health and agent status (docs/wire-format.md).

`parceltrack/v1/{site}/{device}/health` carries a device's counters; the known
fields are checked, and further fields (drivers add their own counters) are
kept as they are. `parceltrack/v1/{site}/agents/{agent}/status` is retained and
is also the agent's Last Will, which carries no `since`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parceltrack import wire
from parceltrack.errors import WireFormatError
from parceltrack.topics import parse_health_topic, parse_status_topic

Count = Annotated[int, Field(ge=0)]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset, e.g. 2026-11-24T10:00:00Z")
    return value


class HealthReport(BaseModel):
    """What a device's health message must at least say; extra counters are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    device: wire.Name
    ts: datetime
    connected: bool
    agent: wire.Name | None = None
    read_point: wire.Name | None = None
    frames_ok: Count | None = None
    frames_bad: Count | None = None
    reads: Count | None = None
    noreads: Count | None = None
    reopens: Count | None = None
    outbox_depth: Count | None = None
    outbox_oldest_s: Annotated[float, Field(ge=0)] | None = None
    # Receipt lag (issue 13): events the broker acknowledged that no commit receipt
    # covers yet, and the age of the oldest. Optional: older agents do not send them.
    unreceipted: Count | None = None
    receipt_lag_s: Annotated[float, Field(ge=0)] | None = None

    _ts_aware = field_validator("ts")(_aware)


AgentState = Literal["online", "offline"]


class StatusMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: AgentState
    since: datetime | None = None

    _since_aware = field_validator("since")(_aware)


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    site: str
    device: str
    agent: str | None
    reported_at: datetime
    connected: bool
    body: dict[str, Any]  # the whole report, for the jsonb column

    def row(self) -> tuple[str, str, str | None, datetime, bool, str]:
        return (
            self.device, self.site, self.agent, self.reported_at, self.connected,
            json.dumps(self.body, separators=(",", ":")),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AgentStatus:
    site: str
    agent: str
    state: str
    since: datetime
    since_known: bool = True  # False for the Last Will: `since` is the arrival time

    def row(self) -> tuple[str, str, str, datetime, bool]:
        return (self.agent, self.site, self.state, self.since, self.since_known)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def encode_health(device: str, ts: datetime, connected: bool, **counters: Any) -> bytes:
    """A device's health message; `counters` are the further fields (read point,
    driver and outbox counters), which must be JSON values."""
    return _json({"device": device, "ts": ts.isoformat(), "connected": connected, **counters})


def encode_status(state: AgentState, since: datetime | None = None) -> bytes:
    """An agent's status; the Last Will is encoded without `since` (its time is unknown)."""
    body: dict[str, Any] = {"state": state}
    if since is not None:
        body["since"] = since.isoformat()
    return _json(body)


def _validated(model: type[BaseModel], payload: bytes) -> Any:
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        raise WireFormatError(f"payload of {len(payload)} bytes exceeds {wire.MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise WireFormatError(wire.describe_error(exc)) from exc


def _check_time(what: str, ts: datetime, now: datetime) -> None:
    if not now - wire.MAX_EVENT_AGE <= ts <= now + wire.MAX_CLOCK_AHEAD:
        raise WireFormatError(f"{what} has an impossible timestamp {ts.isoformat()}")


def decode_health(topic: str, payload: bytes, now: datetime | None = None) -> DeviceHealth:
    """Validate a health message; raise WireFormatError saying what is wrong."""
    where = parse_health_topic(topic)
    if where is None:
        raise WireFormatError(f"topic {topic!r} is not parceltrack/v1/{{site}}/{{device}}/health")
    report: HealthReport = _validated(HealthReport, payload)
    if report.device != where[1]:
        raise WireFormatError(
            f"health names device {report.device!r} but was published on {topic!r}"
        )
    _check_time(f"health of {report.device}", report.ts, now or datetime.now(UTC))
    return DeviceHealth(
        site=where[0],
        device=report.device,
        agent=report.agent,
        reported_at=report.ts,
        connected=report.connected,
        body=report.model_dump(mode="json"),
    )


def decode_status(topic: str, payload: bytes, now: datetime | None = None) -> AgentStatus:
    """Validate an agent status; the Last Will has no `since`, so it is the arrival time."""
    where = parse_status_topic(topic)
    if where is None:
        raise WireFormatError(
            f"topic {topic!r} is not parceltrack/v1/{{site}}/agents/{{agent}}/status"
        )
    if not payload:
        raise WireFormatError("empty status payload (a retained status being cleared)")
    now = now or datetime.now(UTC)
    status: StatusMessage = _validated(StatusMessage, payload)
    since = status.since or now
    _check_time(f"status of agent {where[1]}", since, now)
    return AgentStatus(
        site=where[0], agent=where[1], state=status.state, since=since,
        since_known=status.since is not None,
    )  # fmt: skip

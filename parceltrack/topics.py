"""MQTT topic names of wire format v1 (docs/wire-format.md)."""

from __future__ import annotations

import re

PREFIX = "parceltrack/v1"
# Shared subscription so N ingest workers split the event stream between them.
INGEST_SHARE = f"$share/ingest/{PREFIX}/+/+/events"
ALL_EVENTS = f"{PREFIX}/+/+/events"

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EVENTS = re.compile(r"^parceltrack/v1/([^/]+)/([^/]+)/events$")


def valid_segment(name: str) -> bool:
    """Site, device and agent names are single, safe topic levels."""
    return bool(_SEGMENT.match(name)) and name != "agents"


def events(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/events"


def health(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/health"


def agent_status(site: str, agent: str) -> str:
    return f"{PREFIX}/{site}/agents/{agent}/status"


def alerts(site: str) -> str:
    return f"{PREFIX}/{site}/alerts"


def parse_events_topic(topic: str) -> tuple[str, str] | None:
    """(site, device) of an events topic, or None when the topic is not one."""
    match = _EVENTS.match(topic)
    return (match.group(1), match.group(2)) if match else None

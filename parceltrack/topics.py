"""MQTT topic names and filters of wire format v1 (docs/wire-format.md).

Every topic, filter and topic pattern of the system is written here once:
builders for one site's topics, filters for subscriptions and ACLs, and the
parsers that tell which site and device (or agent) a topic names.
"""

from __future__ import annotations

import re

PREFIX = "parceltrack/v1"
AGENTS = "agents"  # the topic level that sets agent topics apart from device topics

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def valid_segment(name: str) -> bool:
    """Site, device and agent names are single, safe topic levels."""
    return bool(_SEGMENT.match(name)) and name != AGENTS


def events(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/events"


def health(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/health"


def receipts(site: str, device: str) -> str:
    """Where the ingest tells a device's agent how far its events are committed
    (issue 13: the edge keeps an event until a receipt covers it)."""
    return f"{PREFIX}/{site}/{device}/receipts"


def agent_status(site: str, agent: str) -> str:
    return f"{PREFIX}/{site}/{AGENTS}/{agent}/status"


def alerts(site: str) -> str:
    return f"{PREFIX}/{site}/alerts"


# Filters over every site (and device or agent), built by the same functions.
ALL_EVENTS = events("+", "+")
ALL_HEALTH = health("+", "+")
ALL_STATUS = agent_status("+", "+")
ALL_ALERTS = alerts("+")
ALL_RECEIPTS = receipts("+", "+")


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription: the members of `group` split the messages between them."""
    return f"$share/{group}/{topic_filter}"


# N ingest workers split the event stream, health and statuses between them.
INGEST_GROUP = "ingest"
INGEST_SHARE = shared(INGEST_GROUP, ALL_EVENTS)
INGEST_HEALTH_SHARE = shared(INGEST_GROUP, ALL_HEALTH)
INGEST_STATUS_SHARE = shared(INGEST_GROUP, ALL_STATUS)
INGEST_SUBSCRIPTIONS = (INGEST_SHARE, INGEST_HEALTH_SHARE, INGEST_STATUS_SHARE)


def _pattern(topic_filter: str) -> re.Pattern[str]:
    """The regex of a filter whose `+` levels are captured."""
    return re.compile("^" + re.escape(topic_filter).replace(r"\+", "([^/]+)") + "$")


_EVENTS = _pattern(ALL_EVENTS)
_HEALTH = _pattern(ALL_HEALTH)
_STATUS = _pattern(ALL_STATUS)
_RECEIPTS = _pattern(ALL_RECEIPTS)


def _pair(pattern: re.Pattern[str], topic: str) -> tuple[str, str] | None:
    match = pattern.match(topic)
    return (match.group(1), match.group(2)) if match else None


def parse_events_topic(topic: str) -> tuple[str, str] | None:
    """(site, device) of an events topic, or None when the topic is not one."""
    return _pair(_EVENTS, topic)


def parse_health_topic(topic: str) -> tuple[str, str] | None:
    """(site, device) of a health topic, or None."""
    return _pair(_HEALTH, topic)


def parse_status_topic(topic: str) -> tuple[str, str] | None:
    """(site, agent) of an agent status topic, or None."""
    return _pair(_STATUS, topic)


def parse_receipts_topic(topic: str) -> tuple[str, str] | None:
    """(site, device) of a receipts topic, or None."""
    return _pair(_RECEIPTS, topic)

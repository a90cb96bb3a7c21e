"""Topic names, filters and parsers of wire format v1, all from parceltrack.topics."""

import pytest

from parceltrack import topics


@pytest.mark.parametrize(
    ("topic", "events", "health", "status"),
    [
        (topics.events("LHR1", "scan-1"), ("LHR1", "scan-1"), None, None),
        (topics.health("LHR1", "scan-1"), None, ("LHR1", "scan-1"), None),
        (topics.agent_status("LHR1", "agent-1"), None, None, ("LHR1", "agent-1")),
        (topics.alerts("LHR1"), None, None, None),
        ("parceltrack/v1/LHR1/scan-1/extra/events", None, None, None),
        ("parceltrack/v2/LHR1/scan-1/events", None, None, None),
    ],
    ids=["events", "health", "status", "alerts", "too-deep", "other-version"],
)
def test_each_topic_parses_as_its_own_kind_only(
    topic: str,
    events: tuple[str, str] | None,
    health: tuple[str, str] | None,
    status: tuple[str, str] | None,
) -> None:
    """A topic built by one builder is recognised by its parser and by no other."""
    assert topics.parse_events_topic(topic) == events
    assert topics.parse_health_topic(topic) == health
    assert topics.parse_status_topic(topic) == status


def test_filters_are_the_documented_wildcards() -> None:
    """The subscription filters match docs/wire-format.md, shared ones under $share/ingest."""
    assert topics.ALL_EVENTS == "parceltrack/v1/+/+/events"
    assert topics.ALL_STATUS == "parceltrack/v1/+/agents/+/status"
    assert topics.INGEST_SUBSCRIPTIONS == (
        "$share/ingest/parceltrack/v1/+/+/events",
        "$share/ingest/parceltrack/v1/+/+/health",
        "$share/ingest/parceltrack/v1/+/agents/+/status",
    )

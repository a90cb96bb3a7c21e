"""Bad MQTT input against a real ingest worker and a real Mosquitto, beyond the kinds
tests/integration/test_ingest_validation.py covers: missing fields, more wrong types,
wrong topic shapes, a device's batch on another device's topic, replayed event ids.
Each is dead-lettered with its reason (replays are counted as duplicates, stored
once); the valid batches interleaved with them are stored exactly once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg

from composition.services import PrivateMosquitto
from ingest.worker import IngestWorker
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient
from tests.plugins.ingest_chaos import scan_batch
from tests.waiting import wait_until

NOW = datetime.now(UTC)
EVENTS = topics.events("LHR1", "scan-1")


def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = MqttClient(f"pub-{time.monotonic_ns()}", BrokerAddress.from_url(url))
    client.start()
    assert client.wait_connected()
    for info in [client.publish(t, p, qos=1) for t, p in messages]:
        info.wait_for_publish(10)
    client.stop()


def _without(payload: bytes, key: str, event: int | None = None) -> bytes:
    body = json.loads(payload)
    del (body if event is None else body["events"][event])[key]
    return json.dumps(body).encode()


def _with(payload: bytes, event: int | None = None, **changes: object) -> bytes:
    body = json.loads(payload)
    (body if event is None else body["events"][event]).update(changes)
    return json.dumps(body).encode()


def _bad() -> dict[str, tuple[tuple[str, bytes], str]]:
    """Invalid messages, each with a fragment its dead letter's reason must carry."""
    base = scan_batch("scan-1", 9, range(5000, 5005), NOW)[1]
    other = scan_batch("scan-2", 9, range(5000, 5005), NOW)[1]
    cases: dict[str, tuple[tuple[str, bytes], str]] = {
        f"missing batch {k}": ((EVENTS, _without(base, k)), k) for k in ("v", "site", "events")
    }
    cases |= {
        f"missing event {k}": ((EVENTS, _without(base, k, event=1)), f"events.1.{k}")
        for k in ("id", "ts", "kind", "seq", "read_point")
    }
    cases |= {
        "events not a list": ((EVENTS, _with(base, events={"a": 1})), "events"),
        "empty events": ((EVENTS, _with(base, events=[])), "events"),
        "ts not a time": ((EVENTS, _with(base, 0, ts="yesterday")), "events.0.ts"),
        "negative seq": ((EVENTS, _with(base, 2, seq=-1)), "events.2.seq"),
        "rssi a string": ((EVENTS, _with(base, 3, rssi="loud")), "events.3.rssi"),
        "kind unknown": ((EVENTS, _with(base, 4, kind="teleport")), "events.4.kind"),
        "array payload": ((EVENTS, b"[1, 2, 3]"), "should be an object"),
        "not UTF-8": ((EVENTS, b"\xff\xfe{"), "JSON"),
        "empty payload": ((EVENTS, b""), "JSON"),
        "deeply nested": ((EVENTS, b"[" * 5000 + b"]" * 5000), "recursion limit"),
        # A device publishing its batch under another device's topic, and events whose
        # ids name another device inside a batch on the right topic.
        "device under another's topic": ((EVENTS, other), "published on"),
        "site under another's topic": ((topics.events("CDG1", "scan-1"), base), "published on"),
        "event id of another device": (
            (EVENTS, _with(base, 0, id="scan-2:9:5000")),
            "scan-2:9:5000",
        ),
        # Topic levels that match the subscription but are not names.
        "site level not a name": ((topics.events("LHR 1", "scan-1"), base), "published on"),
    }
    return cases


def test_bad_messages_are_dead_lettered_with_reasons_and_valid_traffic_is_stored_once(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Every bad message is one dead letter naming why; valid batches between them and
    replays of them (same ids, even with other content) are stored once, as duplicates."""
    bad = _bad()
    messages: list[tuple[str, bytes]] = []
    valid: list[tuple[str, bytes]] = []
    for i, (message, _reason) in enumerate(bad.values()):
        good = scan_batch("scan-1", 7, range(i * 10, i * 10 + 10), NOW)
        valid.append(good)
        messages += [good, message]
    # Replays: each valid batch again verbatim, and a batch reusing ids with a new code.
    messages += valid
    replay_changed = json.loads(valid[0][1])
    for e in replay_changed["events"]:
        e["code"] = e["tracking_id"] = "EE123456785GB"
    messages.append((EVENTS, json.dumps(replay_changed).encode()))
    _publish(mqtt_server.url, messages)

    def scan_messages() -> int:
        """Messages on events topics (the shared broker may hold other tests' retained
        agent statuses, which the worker receives too)."""
        a = worker.accounts
        return a.messages_received - a.agent_statuses - a.health_reports

    wait_until(
        lambda: scan_messages() >= len(messages) and worker.accounts.messages_in_flight == 0,
        60,
        "every message settled",
    )
    with psycopg.connect(db_dsn) as conn:
        scans = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER "
            "(WHERE code = 'EE123456785GB') FROM scans"
        ).fetchone()
        letters = conn.execute("SELECT topic, payload, reason FROM dead_letters").fetchall()
    assert scans == (10 * len(bad), 10 * len(bad), 0)  # first write wins, once
    reasons = {(t, bytes(p)): r for t, p, r in letters}
    assert len(letters) == len(bad)
    for kind, ((topic, payload), fragment) in bad.items():
        assert (topic, payload) in reasons, f"{kind}: not dead-lettered"
        assert fragment in reasons[(topic, payload)], f"{kind}: {reasons[(topic, payload)]!r}"
    a = worker.accounts
    assert a.messages_received == a.messages_committed + a.messages_dead
    assert scan_messages() == len(messages)
    assert a.messages_dead == len(bad)
    assert a.balanced()
    assert (a.events_written, a.events_duplicate) == (10 * len(bad), 10 * len(bad) + 10)

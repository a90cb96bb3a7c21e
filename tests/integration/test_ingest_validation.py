"""Invalid payloads become dead letters, valid traffic around them is stored; health upserted."""

import json
import time
from datetime import UTC, datetime, timedelta

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


def _publish(url: str, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    client = MqttClient(f"pub-{time.monotonic_ns()}", BrokerAddress.from_url(url))
    client.start()
    assert client.wait_connected()
    for info in [client.publish(t, p, qos=1, retain=retain) for t, p in messages]:
        info.wait_for_publish(10)
    client.stop()


def _edit(payload: bytes, **changes: object) -> bytes:
    body = json.loads(payload)
    body.update(changes)
    return json.dumps(body).encode()


def _edit_event(payload: bytes, index: int, **changes: object) -> bytes:
    body = json.loads(payload)
    body["events"][index].update(changes)
    return json.dumps(body).encode()


def _valid(start: int, n: int = 10) -> tuple[str, bytes]:
    return scan_batch("scan-1", 7, range(start, start + n), NOW)


def _bad_messages() -> dict[str, tuple[tuple[str, bytes], str]]:
    """Each kind of invalid payload, with a fragment its dead letter's reason must carry."""
    base = _valid(1000)[1]
    oversize = _edit(base, padding="x" * 1_100_000)
    return {
        "malformed JSON": ((EVENTS, b'{"v": 1, "site": '), "Invalid JSON"),
        "wrong type": ((EVENTS, _edit_event(base, 0, seq="seven")), "events.0.seq"),
        "unknown version": ((EVENTS, _edit(base, v=2)), "v:"),
        "unknown field": ((EVENTS, _edit(base, colour="red")), "colour"),
        "oversize": ((EVENTS, oversize), "exceeds"),
        "topic mismatch": ((topics.events("LHR1", "scan-2"), base), "published on"),
        "future timestamp": (
            (EVENTS, _edit_event(base, 2, ts=(NOW + timedelta(hours=1)).isoformat())),
            "impossible timestamp",
        ),
        "ancient timestamp": (
            (EVENTS, _edit_event(base, 2, ts=(NOW - timedelta(days=40)).isoformat())),
            "impossible timestamp",
        ),
        "naive timestamp": (
            (EVENTS, _edit_event(base, 1, ts="2026-11-24T10:00:00")),
            "events.1.ts",
        ),
        "bad event in a valid batch": (
            (EVENTS, _edit_event(base, 3, tracking_id="not-an-s10")),
            "events.3.tracking_id",
        ),
        "id not device:boot:seq": ((EVENTS, _edit_event(base, 4, id="x:1:2")), "x:1:2"),
        "NUL the database refuses": (
            (EVENTS, _edit_event(base, 5, code="RR\u0000")),
            "database refused",
        ),
        "health without device": (
            (topics.health("LHR1", "scan-1"), b'{"ts": "2026-11-24T10:00:00Z"}'),
            "device",
        ),
        "status with unknown state": (
            (topics.agent_status("LHR1", "agent-1"), b'{"state": "sleepy"}'),
            "state",
        ),
    }


def test_a_flood_of_malformed_payloads_is_dead_lettered_and_valid_ones_stored(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Each invalid kind is dead-lettered (bytes, topic, reason, time); valid batches are stored."""
    bad = _bad_messages()
    messages: list[tuple[str, bytes]] = []
    for i, (message, _reason) in enumerate(bad.values()):
        messages += [_valid(i * 10), message, message]  # bad ones twice: a redelivery
    _publish(mqtt_server.url, messages)
    expected_dead = 2 * len(bad)
    wait_until(
        lambda: (
            worker.accounts.messages_dead >= expected_dead
            and worker.accounts.messages_in_flight == 0
        ),
        30,
        "every message settled",
    )
    with psycopg.connect(db_dsn) as conn:
        scans = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM scans").fetchone()
        letters = conn.execute(
            "SELECT topic, payload, reason, received_at FROM dead_letters"
        ).fetchall()
    assert scans == (10 * len(bad), 10 * len(bad))
    assert len(letters) == expected_dead
    stored = {(t, bytes(p)): r for t, p, r, _at in letters}
    for kind, ((topic, payload), fragment) in bad.items():
        assert (topic, payload) in stored, f"{kind}: not dead-lettered with its raw bytes"
        assert fragment in stored[(topic, payload)], f"{kind}: reason {stored[(topic, payload)]!r}"
    assert all(at is not None for *_x, at in letters)
    a = worker.accounts
    assert a.messages_received == a.messages_committed + a.messages_dead
    assert a.balanced() and a.events_written == 10 * len(bad)


def test_health_and_agent_status_are_upserted_newest_first(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Health reports fill device_health and devices.last_seen; statuses fill agent_status."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('LHR1', 'Heathrow')")
        conn.execute(
            "INSERT INTO devices (device_id, site_id, kind) VALUES ('scan-1', 'LHR1', 'barcode')"
        )
    t1, t2 = NOW - timedelta(seconds=20), NOW - timedelta(seconds=10)

    def health(ts: datetime, connected: bool) -> tuple[str, bytes]:
        body = {"device": "scan-1", "ts": ts.isoformat(), "connected": connected,
                "frames_ok": 5, "outbox_depth": 0, "antenna_ok": [1, 2]}  # fmt: skip
        return topics.health("LHR1", "scan-1"), json.dumps(body).encode()

    status_topic = topics.agent_status("LHR1", "agent-1")
    _publish(
        mqtt_server.url,
        [
            health(t2, True),
            health(t1, False),  # older, arriving late: changes nothing
            (status_topic, json.dumps({"state": "online", "since": t1.isoformat()}).encode()),
            (status_topic, b'{"state": "offline"}'),  # the Last Will: no since
        ],
    )
    wait_until(
        lambda: worker.accounts.messages_committed >= 4 and worker.accounts.messages_in_flight == 0,
        30,
        "the reports committed",
    )
    with psycopg.connect(db_dsn) as conn:
        dev = conn.execute(
            "SELECT site_id, reported_at, connected, health->'antenna_ok' FROM device_health"
        ).fetchone()
        seen = conn.execute("SELECT last_seen FROM devices WHERE device_id = 'scan-1'").fetchone()
        agent = conn.execute(
            "SELECT site_id, state, since > %s FROM agent_status", (t1,)
        ).fetchone()
    assert dev == ("LHR1", t2, True, [1, 2])
    assert seen == (t2,)
    assert agent == ("LHR1", "offline", True)

    def since() -> object:
        with psycopg.connect(db_dsn) as conn:
            return conn.execute("SELECT since FROM agent_status").fetchone()

    before = since()
    _publish(mqtt_server.url, [(status_topic, b'{"state": "offline"}')])  # the Will again
    wait_until(lambda: worker.accounts.messages_committed >= 5, 30, "the repeated Will")
    assert since() == before

"""The detector's MQTT alert publisher follows the alert log in commit order, against
the real private PostgreSQL and Mosquitto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from composition.services import PrivateMosquitto
from detect.publish import PUBLISHER, AlertPublisher, load_cursor
from parceltrack import topics
from parceltrack.alerts import AlertKind
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient
from tests.waiting import wait_until

Conn = psycopg.Connection[Any]


class Heard:
    """What a subscriber to every site's alert topic received: (topic, event id)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def add(self, topic: str, payload: bytes | bytearray) -> None:
        with self.lock:
            self.messages.append((topic, int(json.loads(payload)["event_id"])))

    def event_ids(self) -> list[int]:
        with self.lock:
            return sorted(e for _, e in self.messages)


@pytest.fixture
def broker(mqtt_server: PrivateMosquitto) -> BrokerAddress:
    return BrokerAddress.from_url(mqtt_server.url)


@pytest.fixture
def heard(broker: BrokerAddress) -> Iterator[Heard]:
    got = Heard()
    sub = MqttClient(f"test-publish-sub-{time.monotonic_ns()}", broker)
    sub.on_message(lambda m: got.add(m.topic, m.payload))
    subscribed = threading.Event()
    sub.on_subscribe(lambda _reasons: subscribed.set())
    sub.start()
    try:
        assert sub.wait_connected()
        sub.subscribe(topics.ALL_ALERTS, qos=1)
        wait_until(subscribed.is_set, 10, "the SUBACK")
        yield got
    finally:
        sub.stop()


@pytest.fixture
def client(broker: BrokerAddress) -> Iterator[MqttClient]:
    pub = MqttClient(f"test-publish-pub-{time.monotonic_ns()}", broker)
    pub.start()
    try:
        assert pub.wait_connected()
        yield pub
    finally:
        pub.stop()


def open_alert(conn: Conn, site: str) -> int:
    """Open an alert at `site` on `conn` (in its transaction, if one is open); the id of
    the change the trigger logged."""
    conn.execute(
        "INSERT INTO alerts (fingerprint, kind, site_id) VALUES (%s, %s, %s)",
        (f"{AlertKind.SILENCE}:{site}:{time.monotonic_ns()}", AlertKind.SILENCE, site),
    )
    row = conn.execute("SELECT max(event_id) FROM alert_events").fetchone()
    assert row is not None
    return int(row[0])


def drain_all(publisher: AlertPublisher, conn: Conn, client: MqttClient, batch: int = 500) -> None:
    while publisher.drain(conn, client, batch=batch):
        pass


def hears(heard: Heard, wanted: list[int]) -> None:
    """Wait until `wanted` (event ids) were heard, then check nothing else was."""
    wait_until(lambda: len(heard.event_ids()) >= len(wanted), 5, f"events {wanted} on MQTT")
    time.sleep(0.3)  # a repeat would show by now
    assert heard.event_ids() == sorted(wanted)


@pytest.mark.parametrize(
    ("sites", "batch"),
    [(None, 500), (None, 1), (("A1", "B1"), 500)],
    ids=["unsharded", "batches-of-one", "site-cursors"],
)
def test_a_change_committed_after_a_later_one_is_still_published(
    db_dsn: str,
    broker: BrokerAddress,
    heard: Heard,
    client: MqttClient,
    sites: tuple[str, ...] | None,
    batch: int,
) -> None:
    """A change whose transaction began first but commits after a later change was
    published is published when it commits, and nothing is published twice."""
    publisher = AlertPublisher(db_dsn, broker, sites=sites)
    with psycopg.connect(db_dsn, autocommit=True) as conn, psycopg.connect(db_dsn) as slow:
        early = [open_alert(conn, "A1"), open_alert(conn, "B1")]
        drain_all(publisher, conn, client, batch)
        hears(heard, early)
        held = open_alert(slow, "A1")  # written first, committed last
        later = [open_alert(conn, "A1"), open_alert(conn, "B1")]
        assert held < min(later)
        drain_all(publisher, conn, client, batch)
        hears(heard, early + later)
        slow.commit()
        drain_all(publisher, conn, client, batch)
        hears(heard, early + later + [held])
        assert publisher.drain(conn, client, batch=batch) == 0


def test_a_cursor_from_before_positions_is_read_by_id_once_then_followed_by_position(
    db_dsn: str, broker: BrokerAddress, heard: Heard, client: MqttClient
) -> None:
    """A stored event id (no position) publishes the changes after it visible now, then
    the publisher follows by position and a late commit below that id still arrives."""
    with psycopg.connect(db_dsn, autocommit=True) as conn, psycopg.connect(db_dsn) as slow:
        before = open_alert(conn, "A1")  # published by the old publisher
        conn.execute(
            "INSERT INTO alert_publish_cursor (publisher, event_id) VALUES (%s, %s)",
            (PUBLISHER, before),
        )
        held = open_alert(slow, "A1")
        after = open_alert(conn, "A1")
        publisher = AlertPublisher(db_dsn, broker)
        drain_all(publisher, conn, client)
        hears(heard, [after])
        slow.commit()
        drain_all(publisher, conn, client)
        hears(heard, [held, after])
        assert publisher.drain(conn, client) == 0
        cursor = load_cursor(conn, PUBLISHER)
        assert cursor.position is not None and cursor.toward is None
        assert cursor.event_id == after  # the newest published, as before positions

"""Alerts on MQTT: `parceltrack/v1/{site}/alerts`, QoS 1, from the alert event log.

The publisher follows `alert_events` (written by the trigger on `alerts`) in commit
order: `event_id` is taken when a change is written, so event 41 of a slow
transaction (another shard, an acknowledgement in the API) can commit after 42, and
a cursor on the id would skip it. Its cursor in `alert_publish_cursor` is a feed
position instead (storage/feed.py): each round takes a fresh snapshot and publishes,
in event_id order, the changes committed between the stored position and it. The
cursor moves only after the broker acknowledged (PUBACK), batch by batch (`toward`
and `toward_event` say how far into the snapshot), so a restart or a broker outage
delays alerts but loses none (a crash between PUBACK and the cursor update sends
one again: at least once, as QoS 1 is). A cursor from before positions (an event
id only) is read once by id, the changes visible in the first snapshot after it,
and followed by position from then on.

A detection shard publishes the alerts of its own sites only, with one cursor per
site (`detect:<site>`), so a site moved to another shard keeps its cursor; a new
site cursor starts where the unsharded publisher stood.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import stamina

from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient
from storage import feed

log = logging.getLogger(__name__)

PUBLISHER = "detect"

# An idle publisher still stores the snapshot it reached now and then, so the next
# round's read (by `xact_id` since the position) does not grow with every other
# site's changes, without a write every round.
IDLE_STORE_S = 30.0


@dataclass(frozen=True, slots=True)
class PublishCursor:
    """How far a publisher is: every change committed before `position` is published,
    and those committed between it and `toward` up to event `toward_event`. Without a
    position, `event_id` is a cursor from before positions, and `toward` the snapshot
    in which the changes after it are read once by id."""

    event_id: int  # the newest event published
    position: feed.FeedPosition | None = None
    toward: feed.FeedPosition | None = None
    toward_event: int = 0

    def unpublished(self, site: str | None) -> tuple[str, dict[str, Any]]:
        """The condition on `alert_events` (and its parameters) for what is left in
        `toward` (which must be set)."""
        assert self.toward is not None
        if self.position is None:
            where, params = feed.visible_at("xact_id", self.toward)
        else:
            where, params = feed.committed_between("xact_id", self.position, self.toward)
        params |= {"after": self.toward_event, "site": site}
        where += (
            " AND event_id > %(after)s AND (%(site)s::text IS NULL OR alert->>'site_id' = %(site)s)"
        )
        return where, params


def payload(event_id: int, change: str, alert: dict[str, Any]) -> bytes:
    """The message body: the change, its event id, and the alert row as JSON."""
    return json.dumps(
        {"event_id": event_id, "change": change, "alert": alert}, separators=(",", ":")
    ).encode()


def topic_for(alert: dict[str, Any]) -> str:
    site = str(alert.get("site_id") or "")
    return topics.alerts(site if topics.valid_segment(site) else "unknown")


class AlertPublisher:
    def __init__(
        self,
        dsn: str,
        broker: BrokerAddress,
        interval_s: float = 0.5,
        sites: Sequence[str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.sites = sites
        self.broker = broker
        self.interval_s = interval_s
        self.published = 0
        # When each cursor was last stored (monotonic), for IDLE_STORE_S.
        self._stored_at: dict[str, float] = {}

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def run(self, stop: threading.Event) -> None:
        client = MqttClient("parceltrack-detect-alerts", self.broker)
        client.start()
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not stop.is_set():
                    if client.is_connected() or client.wait_connected(2.0):
                        self.drain(conn, client)
                    stop.wait(self.interval_s)
        finally:
            client.stop()

    def drain(self, conn: psycopg.Connection[Any], client: MqttClient, batch: int = 500) -> int:
        if self.sites is None:
            return self._drain(conn, client, PUBLISHER, None, batch)
        return sum(
            self._drain(conn, client, f"{PUBLISHER}:{site}", site, batch) for site in self.sites
        )

    def _drain(
        self,
        conn: psycopg.Connection[Any],
        client: MqttClient,
        publisher: str,
        site: str | None,
        batch: int,
    ) -> int:
        cursor = load_cursor(conn, publisher)
        fresh = cursor.toward is None
        if fresh:
            # Taken in its own statement: whatever it sees committed is visible to the
            # reads below, and what commits later waits for the next snapshot.
            cursor = replace(
                cursor,
                toward=feed.current_position(conn),
                toward_event=cursor.event_id if cursor.position is None else 0,
            )
        where, params = cursor.unpublished(site)
        rows = conn.execute(
            f"SELECT event_id, change, alert FROM alert_events WHERE {where} "
            "ORDER BY event_id LIMIT %(batch)s",
            params | {"batch": batch},
        ).fetchall()
        infos = [
            (int(eid), client.publish(topic_for(alert), payload(int(eid), change, alert), qos=1))
            for eid, change, alert in rows
        ]
        done = [eid for eid, _ in _acknowledged(infos)]
        if done:
            cursor = replace(cursor, event_id=max(cursor.event_id, *done), toward_event=done[-1])
        if len(done) == len(rows) and len(rows) < batch:
            # The snapshot is published in full: it becomes the position.
            stored_at = self._stored_at.get(publisher)
            idle = fresh and not done
            if idle and stored_at is not None and time.monotonic() - stored_at < IDLE_STORE_S:
                return 0  # nothing new: the stored position still says the same
            assert cursor.toward is not None
            cursor = replace(cursor, position=cursor.toward, toward=None, toward_event=0)
        elif not done:
            return 0
        store_cursor(conn, publisher, cursor)
        self._stored_at[publisher] = time.monotonic()
        self.published += len(done)
        return len(done)


def _acknowledged(infos: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """The leading messages the broker acknowledged (PUBACK), in order: the cursor
    may move past those only."""
    done = []
    for eid, info in infos:
        try:
            info.wait_for_publish(timeout=10)
        except (RuntimeError, ValueError):
            break
        if not info.is_published():
            break
        done.append((eid, info))
    return done


def load_cursor(conn: psycopg.Connection[Any], publisher: str) -> PublishCursor:
    """The publisher's cursor; a new site cursor starts where the unsharded publisher
    stood, and a first publisher from the start of the log."""
    row = conn.execute(
        "SELECT event_id, position, toward, toward_event FROM alert_publish_cursor "
        "WHERE publisher = ANY(%s) ORDER BY publisher = %s DESC LIMIT 1",
        ([publisher, PUBLISHER], publisher),
    ).fetchone()
    if row is None:
        return PublishCursor(0)
    event_id, position, toward, toward_event = row
    return PublishCursor(
        int(event_id),
        None if position is None else feed.FeedPosition.parse(position),
        None if toward is None else feed.FeedPosition.parse(toward),
        int(toward_event or 0),
    )


def store_cursor(conn: psycopg.Connection[Any], publisher: str, cursor: PublishCursor) -> None:
    conn.execute(
        "INSERT INTO alert_publish_cursor (publisher, event_id, position, toward, toward_event) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (publisher) DO UPDATE SET "
        "event_id = EXCLUDED.event_id, position = EXCLUDED.position, "
        "toward = EXCLUDED.toward, toward_event = EXCLUDED.toward_event",
        (
            publisher,
            cursor.event_id,
            None if cursor.position is None else cursor.position.text(),
            None if cursor.toward is None else cursor.toward.text(),
            cursor.toward_event if cursor.toward is not None else None,
        ),
    )

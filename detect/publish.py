"""Alerts on MQTT: `parceltrack/v1/{site}/alerts`, QoS 1, from the alert event log.

The publisher tails `alert_events` (written by the trigger on `alerts`) and moves
its cursor in `alert_publish_cursor` only after the broker acknowledged (PUBACK),
so a restart or a broker outage delays alerts but loses none (a crash between
PUBACK and the cursor update sends one again: at least once, as QoS 1 is).

A detection shard publishes the alerts of its own sites only, with one cursor per
site (`detect:<site>`), so a site moved to another shard keeps its cursor; a new
site cursor starts where the unsharded publisher stood.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
import stamina

from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient

log = logging.getLogger(__name__)

PUBLISHER = "detect"


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
        row = conn.execute(
            "SELECT coalesce((SELECT event_id FROM alert_publish_cursor WHERE publisher = %s), "
            "(SELECT event_id FROM alert_publish_cursor WHERE publisher = %s), 0)",
            (publisher, PUBLISHER),
        ).fetchone()
        cursor = int(row[0]) if row else 0
        rows = conn.execute(
            "SELECT event_id, change, alert FROM alert_events WHERE event_id > %s "
            "AND (%s::text IS NULL OR alert->>'site_id' = %s) ORDER BY event_id LIMIT %s",
            (cursor, site, site, batch),
        ).fetchall()
        if not rows:
            return 0
        infos = [
            (int(eid), client.publish(topic_for(alert), payload(int(eid), change, alert), qos=1))
            for eid, change, alert in rows
        ]
        done = cursor
        for eid, info in infos:
            try:
                info.wait_for_publish(timeout=10)
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            done = eid
        if done > cursor:
            conn.execute(
                "INSERT INTO alert_publish_cursor (publisher, event_id) VALUES (%s, %s) "
                "ON CONFLICT (publisher) DO UPDATE SET event_id = EXCLUDED.event_id",
                (publisher, done),
            )
            self.published += sum(1 for eid, _ in infos if eid <= done)
        return done - cursor

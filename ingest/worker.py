"""The ingest worker: MQTT (shared subscription, manual acks) -> validate -> COPY -> ack.

A batch of messages is committed to the database before any of them is
acknowledged to the broker, so a crash at any point loses nothing: unacked
messages are redelivered to the persistent session and their events are
deduplicated on the event id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import stamina

from ingest import metrics
from ingest.migrations import has_timescale
from ingest.store import ScanPartitions, write_dead_letter, write_scans
from parceltrack import topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.errors import WireFormatError
from parceltrack.events import ScanEvent
from parceltrack.mqtt import connect, make_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    dsn: str
    broker: BrokerAddress
    client_id: str = "ingest-1"
    max_batch_messages: int = 200  # with up to a few hundred events per message
    linger_s: float = 0.05  # wait this long for a batch to fill before committing
    # Receive Maximum: the broker sends at most this many unacked messages, which
    # bounds memory when the database is slow or down (back-pressure).
    max_in_flight: int = 2_000
    report_every_s: float = 10.0


@dataclass(slots=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection the message arrived on; acks go to that one only


@dataclass
class IngestWorker:
    settings: IngestSettings
    accounts: metrics.Accounts = field(default_factory=metrics.Accounts)
    on_commit: Callable[[list[ScanEvent]], None] | None = None

    def __post_init__(self) -> None:
        self._inbox: queue.Queue[_Received] = queue.Queue()
        self._stop = threading.Event()
        self._generation = 0
        self._client = make_client(
            self.settings.client_id,
            self.settings.broker,
            persistent=True,
            receive_maximum=self.settings.max_in_flight,
        )
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # -- MQTT side (paho's network thread) -------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        self._generation += 1
        log.info("ingest %s connected to broker (%s)", self.settings.client_id, rc)
        client.subscribe(topics.INGEST_SHARE, qos=1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        log.warning("ingest %s lost the broker (%s); reconnecting", self.settings.client_id, rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received = _Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation)
        self._inbox.put(received)

    # -- database side (the worker's own thread) --------------------------------
    def run(self) -> None:
        connect(self._client)
        self._client.loop_start()
        try:
            self._serve()
        finally:
            self._leave_group()
            log.info("ingest %s stopped: %s", self.settings.client_id, self.accounts.summary())

    def stop(self) -> None:
        self._stop.set()

    def _leave_group(self) -> None:
        """Graceful stop: leave the shared subscription, then commit what already came.

        Mosquitto keeps queueing a share for a persistent session that is offline but
        still subscribed; a worker that stops on purpose must unsubscribe, or its share
        waits for it. (After kill -9 the share waits until it restarts: by design.)
        """
        unsub = threading.Event()
        self._client.on_unsubscribe = lambda *_a: unsub.set()
        if self._client.is_connected():
            self._client.unsubscribe(topics.INGEST_SHARE)
            unsub.wait(5)
        time.sleep(0.2)  # messages already on the wire when the UNSUBACK was sent
        try:
            conn, partitions = self._connect_db_once()
            while batch := self._collect(wait=False):
                self._commit(conn, partitions, batch)
                self._ack(batch)
            conn.close()
        except psycopg.Error as exc:
            log.warning("could not flush on stop (%s); unacked messages will be redelivered", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def _serve(self) -> None:
        conn, partitions = self._connect_db()
        last_report = time.monotonic()
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                conn, partitions = self._commit_with_retry(conn, partitions, batch)
            if time.monotonic() - last_report > self.settings.report_every_s:
                log.info("ingest %s: %s", self.settings.client_id, self.accounts.summary())
                last_report = time.monotonic()
        conn.close()

    def _collect(self, wait: bool = True) -> list[_Received]:
        try:
            first = self._inbox.get(timeout=0.2) if wait else self._inbox.get_nowait()
        except queue.Empty:
            return []
        batch, deadline = [first], time.monotonic() + self.settings.linger_s
        while len(batch) < self.settings.max_batch_messages:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._inbox.get(timeout=remaining)
                    if remaining > 0
                    else (self._inbox.get_nowait())
                )
            except queue.Empty:
                break
            batch.append(item)
        self.accounts.messages_received += len(batch)
        metrics.MESSAGES.labels("received").inc(len(batch))
        return batch

    def _connect_db_once(self) -> tuple[psycopg.Connection[Any], ScanPartitions]:
        conn: psycopg.Connection[Any] = psycopg.connect(
            self.settings.dsn, autocommit=True, connect_timeout=5
        )
        return conn, ScanPartitions(timescale=has_timescale(conn))

    def _connect_db(self) -> tuple[psycopg.Connection[Any], ScanPartitions]:
        for attempt in stamina.retry_context(
            on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0
        ):
            with attempt:
                return self._connect_db_once()
        raise AssertionError("unreachable: retries are unbounded")

    def _commit_with_retry(
        self,
        conn: psycopg.Connection[Any],
        partitions: ScanPartitions,
        batch: list[_Received],
    ) -> tuple[psycopg.Connection[Any], ScanPartitions]:
        """Commit the batch, reconnecting while the database is away; then ack it."""
        while not self._stop.is_set():
            try:
                self._commit(conn, partitions, batch)
                break
            except psycopg.OperationalError as exc:
                log.warning(
                    "database unavailable (%s); holding %d messages unacked",
                    exc.__class__.__name__,
                    len(batch),
                )
                conn.close()
                conn, partitions = self._connect_db()
        else:
            return conn, partitions  # stopping: unacked messages are redelivered later
        self._ack(batch)
        return conn, partitions

    def _ack(self, batch: list[_Received]) -> None:
        for item in batch:
            if item.generation == self._generation:
                self._client.ack(item.mid, item.qos)

    def _commit(
        self,
        conn: psycopg.Connection[Any],
        partitions: ScanPartitions,
        batch: list[_Received],
    ) -> None:
        now = datetime.now(UTC)
        events: list[ScanEvent] = []
        dead: list[tuple[_Received, str]] = []
        for item in batch:
            try:
                events.extend(wire.to_scan_events(wire.decode_batch(item.topic, item.payload, now)))
            except WireFormatError as exc:
                dead.append((item, str(exc)))
        with conn.transaction():
            result = write_scans(conn, events, partitions)
            for item, reason in dead:
                write_dead_letter(conn, item.topic, item.payload, reason)
        a = self.accounts
        a.messages_committed += len(batch) - len(dead)
        a.messages_dead += len(dead)
        a.events_received += result.staged
        a.events_written += result.written
        a.events_duplicate += result.duplicates
        metrics.MESSAGES.labels("committed").inc(len(batch) - len(dead))
        metrics.MESSAGES.labels("dead_lettered").inc(len(dead))
        metrics.EVENTS.labels("written").inc(result.written)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        if events:
            metrics.BATCH_EVENTS.observe(len(events))
            metrics.LAG.observe((datetime.now(UTC) - max(e.ts for e in events)).total_seconds())
        for item, reason in dead:
            log.warning("dead-lettered a message on %s: %s", item.topic, reason)
        if self.on_commit is not None and events:
            self.on_commit(events)

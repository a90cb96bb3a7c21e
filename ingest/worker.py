"""The ingest worker: MQTT (shared subscriptions, manual acks) -> validate -> COPY -> ack.

A batch of messages is committed to the database before any of them is
acknowledged to the broker, so a crash at any point loses nothing: unacked
messages are redelivered to the persistent session and their events are
deduplicated on the event id. After each commit the worker publishes commit
receipts (parceltrack/receipts.py) to the agents, which keep every event until a
receipt covers it: what the broker loses, the edge sends again.

paho's network thread is never blocked here: `_on_message` decodes the message
and appends it to the inbox, never waiting on anything, so during a database outage
the thread still answers keep-alives, notices a lost broker, reconnects and
resubscribes. Decoding on arrival (validation, the COPY rows, the receipt ranges)
is a pipeline: the next batch is decoded while the worker's thread COPies the
current one, so the database connection is not left idle while Python validates
(issue 17: it was idle a third of the time). Only what the next batch or two can
use is decoded ahead (`_DECODE_AHEAD`): a message arriving past that, during a
database outage say, is held raw and decoded when its batch is committed, so
memory stays bounded as before. Either way a message's timestamps are checked
against the clock when it is decoded (before: when its batch was committed).

The broker's Receive Maximum (MQTT 5 flow control, with manual acks) bounds the
unacked messages it sends. Mosquitto 2.0.11 goes past it under load (37 to 201 held
with a Receive Maximum of 20, measured), so a message past max_in_flight +
max_batch_messages held is left unacked and not queued: the broker keeps it in the
session and sends it again after a reconnect, which the worker makes once it has
committed all it holds.

Outcomes per message, all in the batch's one transaction:
- a valid scan batch: its events are written (or counted as duplicates);
- a valid health report or agent status: upserted (newest wins);
- anything invalid: a row in `dead_letters` with topic, raw bytes and reason. One
  bad event makes its whole message a dead letter (the reason names the event):
  a message is the unit the edge publishes and the broker redelivers, and
  storing half of it would make the dead letter an incomplete record of it.
If the database refuses a batch for a reason that is not an outage (a value
PostgreSQL cannot store, say), each message is retried alone and the one it
refuses is dead-lettered, so it never blocks the valid traffic behind it.

Kill -9 and shared subscriptions: the persistent session of a killed worker
stays subscribed, so Mosquitto keeps queueing that worker's share of the stream
(and holds its unacked messages) until a worker with the same client id comes
back. Nothing is lost, but that share waits: run killed workers again under the
same id (a supervisor's restart does). A graceful stop unsubscribes first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import stamina

from ingest import metrics
from ingest.store import (
    MergeAfterConflicts,
    ScanPartitions,
    batch_rows,
    upsert_agent_status,
    upsert_device_health,
    write_dead_letter,
    write_scan_rows,
)
from parceltrack import health, receipts, topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.errors import WireFormatError
from parceltrack.mqtt import Message, MqttClient, ReasonCode
from storage.migrations import has_timescale

log = logging.getLogger(__name__)

_DECODE_AHEAD = 2  # batches' worth of messages decoded on arrival, at most
# Python's GIL switch interval for a worker process (the default is 5 ms). Two
# threads work at once here: paho's decodes the next batch while the worker's
# formats COPY rows. With the default, the COPY thread, woken because PostgreSQL
# drained its socket, waited up to 5 ms for the decoding thread to yield, the
# server starved and the pipeline ran slower than without it (bench ingest,
# 2026-11-28: 64-94k scans/s against 78-178k with 0.5 ms, same runs).
GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True, slots=True)
class IngestSettings:
    dsn: str
    broker: BrokerAddress
    client_id: str = "ingest-1"
    max_batch_messages: int = 200  # with up to a few hundred events per message
    linger_s: float = 0.05  # wait this long for a batch to fill before committing
    # Receive Maximum: the broker sends at most this many unacked messages, which
    # bounds memory when the database is slow or down (back-pressure): at most
    # max_in_flight x 1 MiB, a few tens of MB for typical 500-event batches.
    max_in_flight: int = 400
    report_every_s: float = 10.0
    receipts: bool = True  # publish commit receipts (off only to measure their cost)


@dataclass(frozen=True, slots=True)
class _Scans:
    """A valid scan batch message, ready to COPY."""

    rows: list[tuple[object, ...]]
    days: set[date]
    newest: datetime
    committed: list[receipts.Committed]  # (site, device, boot, ranges) of its events


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: str  # why the wire format refuses it: the dead letter's reason


@dataclass(frozen=True, slots=True)
class _Broken:
    """Decoding raised something other than a refusal (a bug): raised again on the
    worker's thread when its batch is committed, as if decoded there."""

    error: BaseException


_Outcome = _Scans | health.DeviceHealth | health.AgentStatus | _Refused | _Broken


def _decode(topic: str, payload: bytes, now: datetime) -> _Outcome:
    """What one message amounts to; `now` bounds its timestamps."""
    try:
        # The ground's topic parsers pick the decoder (each parses the topic again
        # for the site and device it names): no topic shape is written twice.
        if topics.parse_events_topic(topic) is not None:
            batch = wire.decode_batch(topic, payload, now)
            rows, days, newest = batch_rows(batch)
            return _Scans(rows, days, newest, _covered(batch.site, batch.device, batch.events))
        if topics.parse_health_topic(topic) is not None:
            return health.decode_health(topic, payload, now)
        if topics.parse_status_topic(topic) is not None:
            return health.decode_status(topic, payload, now)
        raise WireFormatError(f"topic {topic!r} is not one the ingest handles")
    except WireFormatError as exc:
        return _Refused(str(exc))
    except Exception as exc:  # carried to the worker's thread and raised there
        return _Broken(exc)


def _covered(
    site: str, device: str, events: Sequence[_Seq | wire.WireEvent]
) -> list[receipts.Committed]:
    boots, seqs = [e.boot for e in events], [e.seq for e in events]
    return [
        (site, device, boot, ranges)
        for boot, ranges in receipts.ranges_by_boot(boots, seqs).items()
    ]


@dataclass(slots=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection the message arrived on; acks go to that one only
    outcome: _Outcome | None = None  # decoded on arrival, unless too far ahead

    def decoded(self) -> _Outcome:
        if self.outcome is None:
            self.outcome = _decode(self.topic, self.payload, datetime.now(UTC))
        return self.outcome


@dataclass(slots=True)
class _Decoded:
    """What a batch of messages amounts to, before it is written."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    reports: dict[str, health.DeviceHealth] = field(default_factory=dict)
    statuses: dict[str, health.AgentStatus] = field(default_factory=dict)
    dead: list[tuple[_Received, str]] = field(default_factory=list)
    newest: list[datetime] = field(default_factory=list)  # per scan batch message
    # (site, device, boot, ranges) of the events of the valid scan batches
    committed: list[receipts.Committed] = field(default_factory=list)

    def add(self, item: _Received) -> None:
        outcome = item.decoded()
        if isinstance(outcome, _Scans):
            self.rows.extend(outcome.rows)
            self.days |= outcome.days
            self.newest.append(outcome.newest)
            self.committed.extend(outcome.committed)
        elif isinstance(outcome, health.DeviceHealth):
            old = self.reports.get(outcome.device)
            if old is None or old.reported_at <= outcome.reported_at:
                self.reports[outcome.device] = outcome
        elif isinstance(outcome, health.AgentStatus):
            old_status = self.statuses.get(outcome.agent)
            if old_status is None or old_status.since <= outcome.since:
                self.statuses[outcome.agent] = outcome
        elif isinstance(outcome, _Refused):
            self.dead.append((item, outcome.reason))
        else:
            raise outcome.error

    def receipts(self) -> list[receipts.Receipt]:
        """What this batch's commit covers: its scan events (written or duplicates)
        and the events of dead-lettered scan batches, read leniently (the database
        keeps them in the dead letter, and the edge must not send them forever)."""
        for item, _reason in self.dead:
            where = topics.parse_events_topic(item.topic)
            if where is not None:
                pairs = receipts.event_seqs(item.payload)
                self.committed.extend(_covered(*where, [_Seq(b, s) for b, s in pairs]))
        return receipts.receipts_for(self.committed)


@dataclass(frozen=True, slots=True)
class _Seq:
    """Boot and sequence number of an event read leniently from a dead letter."""

    boot: int
    seq: int


@dataclass
class _Period:
    """What happened since the last periodic log line."""

    batches: int = 0
    events: int = 0
    lag_s: float = 0.0


@dataclass
class IngestWorker:
    settings: IngestSettings
    accounts: metrics.Accounts = field(default_factory=metrics.Accounts)

    def __post_init__(self) -> None:
        # Unbounded, so paho's network thread never waits on it: the Receive Maximum
        # bounds what the broker sends unacked (manual acks go out only after the
        # commit). A thread blocked here could not answer keep-alives or notice a
        # lost broker during a database outage, nor reconnect and resubscribe.
        self._inbox: queue.Queue[_Received] = queue.Queue()
        self._hold_limit = self.settings.max_in_flight + self.settings.max_batch_messages
        # The batch being committed and the next one: decoded rows take about 2.5x
        # the payload's memory, so what waits beyond them stays raw.
        self._decode_ahead = _DECODE_AHEAD * self.settings.max_batch_messages
        self.overflowed = 0  # messages left unacked past the hold limit, sent again later
        self._redeliver = threading.Event()  # set: reconnect once all held is committed
        self._stop = threading.Event()
        # Bumped on every connect and disconnect; an ack goes out only on the
        # connection its message came on. Checked and sent under the lock: a PUBACK
        # queued late would otherwise go out on the next connection, where the same
        # packet id may name another message, acking what was never committed.
        self._generation = 0
        self._connection_lock = threading.Lock()
        self._period = _Period()
        self._merge_mode = MergeAfterConflicts()
        self._client = MqttClient(
            self.settings.client_id,
            self.settings.broker,
            persistent=True,
            receive_maximum=self.settings.max_in_flight,
            manual_ack=True,
        )
        self._client.on_connect(self._on_connect)
        self._client.on_message(self._on_message)
        self._client.on_disconnect(self._on_disconnect)
        self._client.on_subscribe(self._on_subscribe)
        # Set once the broker confirmed this connection's subscriptions.
        self.subscribed = threading.Event()

    # -- MQTT side (paho's network thread) -------------------------------------
    def _on_connect(self, rc: ReasonCode) -> None:
        with self._connection_lock:
            self._generation += 1
        log.info("ingest %s connected to broker (%s)", self.settings.client_id, rc)
        # Retained statuses only when a subscription is new, not on every reconnect.
        self._client.subscribe(topics.INGEST_SUBSCRIPTIONS, qos=1, retain_only_if_new=True)

    def _on_disconnect(self, rc: ReasonCode) -> None:
        with self._connection_lock:
            self._generation += 1
        self.subscribed.clear()
        log.warning("ingest %s lost the broker (%s); reconnecting", self.settings.client_id, rc)

    def _on_subscribe(self, *_args: object) -> None:
        # Operators (and the soak) see when the worker takes its share again.
        log.info("ingest %s subscribed", self.settings.client_id)
        self.subscribed.set()

    def _on_message(self, msg: Message) -> None:
        if self.accounts.messages_in_flight >= self._hold_limit:
            # Past the Receive Maximum and a batch: not ours to hold. Unacked, it stays
            # in the broker's session and comes again after the reconnect _serve makes.
            self.overflowed += 1
            metrics.MESSAGES.labels("overflow").inc()
            self._redeliver.set()
            return
        received = _Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation)
        if self.accounts.messages_in_flight < self._decode_ahead:
            received.outcome = _decode(received.topic, received.payload, datetime.now(UTC))
        # Counted here, so "in flight" includes what waits in the inbox.
        self.accounts.messages_received += 1
        metrics.MESSAGES.labels("received").inc()
        self._inbox.put_nowait(received)

    # -- database side (the worker's own thread) --------------------------------
    def run(self) -> None:
        self._client.start()
        try:
            self._serve()
        finally:
            self._leave_group()
            log.info("ingest %s stopped: %s", self.settings.client_id, self.accounts.summary())

    def stop(self) -> None:
        self._stop.set()

    @property
    def inbox_depth(self) -> int:
        return self._inbox.qsize()

    def _leave_group(self) -> None:
        """Graceful stop: leave the shared subscriptions, then commit what already came.

        Mosquitto keeps queueing a share for a persistent session that is offline but
        still subscribed; a worker that stops on purpose must unsubscribe, or its share
        waits for it. (After kill -9 the share waits until it restarts: by design.)
        """
        unsub = threading.Event()
        self._client.on_unsubscribe(unsub.set)
        if self._client.is_connected():
            self._client.unsubscribe(topics.INGEST_SUBSCRIPTIONS)
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
        self._client.stop()

    def _serve(self) -> None:
        conn, partitions = self._connect_db()
        last_report = time.monotonic()
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                conn, partitions = self._commit_with_retry(conn, partitions, batch)
            if self._redeliver.is_set() and self.accounts.messages_in_flight == 0:
                self._reconnect_for_redelivery()
            if time.monotonic() - last_report > self.settings.report_every_s:
                self._report()
                last_report = time.monotonic()
        conn.close()

    def _reconnect_for_redelivery(self) -> None:
        """Messages were left unacked past the hold limit; everything held is committed
        now, so a new connection to the same session makes the broker send them again."""
        self._redeliver.clear()
        log.info("ingest %s: reconnecting for %d messages left unacked past %d held",
                 self.settings.client_id, self.overflowed, self._hold_limit)  # fmt: skip
        self._client.stop()
        self._client.start()

    def _report(self) -> None:
        p, self._period = self._period, _Period()
        log.info(
            "ingest %s: %s; %d batches, %.0f events per batch, lag %.3fs",
            self.settings.client_id,
            self.accounts.summary(),
            p.batches,
            p.events / p.batches if p.batches else 0.0,
            p.lag_s,
        )

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
        metrics.IN_FLIGHT.labels(self.settings.client_id).set(self.accounts.messages_in_flight)
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
                if self._stop.is_set() and attempt.num > 1:
                    raise _Stopping
                return self._connect_db_once()
        raise AssertionError("unreachable: retries are unbounded")

    def _commit_with_retry(
        self,
        conn: psycopg.Connection[Any],
        partitions: ScanPartitions,
        batch: list[_Received],
    ) -> tuple[psycopg.Connection[Any], ScanPartitions]:
        """Commit the batch, reconnecting while the database is away; then ack it.

        While this waits, nothing is acked, so the broker stops sending once
        max_in_flight messages are unacked: that is the back-pressure.
        """
        while not self._stop.is_set():
            try:
                self._commit(conn, partitions, batch)
                break
            except psycopg.OperationalError as exc:
                log.warning(
                    "database unavailable (%s); holding %d messages unacked",
                    exc.__class__.__name__,
                    self.accounts.messages_in_flight,
                )
                metrics.DB_OUTAGES.inc()
                conn.close()
                try:
                    conn, partitions = self._connect_db()
                except _Stopping:
                    break
        else:
            return conn, partitions  # stopping: unacked messages are redelivered later
        self._ack(batch)
        return conn, partitions

    def _ack(self, batch: list[_Received]) -> None:
        with self._connection_lock:
            for item in batch:
                if item.generation == self._generation:
                    self._client.ack(item.mid, item.qos)

    def _commit(
        self,
        conn: psycopg.Connection[Any],
        partitions: ScanPartitions,
        batch: list[_Received],
    ) -> None:
        decoded = _Decoded()
        for item in batch:
            decoded.add(item)
        try:
            self._write(conn, partitions, decoded)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, ValueError) as exc:
            if len(batch) == 1:
                self._refused(conn, batch[0], exc)
                return
            log.warning("database refused a batch (%s); committing its messages one by one", exc)
            for item in list(batch):
                self._commit(conn, partitions, [item])
                self._ack([item])
                batch.remove(item)  # an outage now retries only the rest
            return
        self._account(batch, decoded)

    def _write(
        self, conn: psycopg.Connection[Any], partitions: ScanPartitions, decoded: _Decoded
    ) -> None:
        started = time.monotonic()
        with conn.transaction():
            result = write_scan_rows(conn, decoded.rows, decoded.days, partitions, self._merge_mode)
            for item, reason in decoded.dead:
                write_dead_letter(conn, item.topic, item.payload, reason)
            upsert_agent_status(conn, [s.row() for s in decoded.statuses.values()])
            upsert_device_health(conn, [h.row() for h in decoded.reports.values()])
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        a = self.accounts
        a.events_received += result.staged
        a.events_written += result.written
        a.events_duplicate += result.duplicates
        metrics.EVENTS.labels("received").inc(result.staged)
        metrics.EVENTS.labels("written").inc(result.written)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)

    def _refused(self, conn: psycopg.Connection[Any], item: _Received, exc: Exception) -> None:
        """The database refused this one message: dead-letter it with the reason."""
        reason = f"database refused the message: {exc.__class__.__name__}: {exc}"
        with conn.transaction():
            write_dead_letter(conn, item.topic, item.payload, reason[:2000])
        decoded = _Decoded(dead=[(item, reason)])
        self._account([item], decoded)

    def _account(self, batch: list[_Received], decoded: _Decoded) -> None:
        dead = len(decoded.dead)
        a = self.accounts
        a.messages_committed += len(batch) - dead
        a.messages_dead += dead
        a.health_reports += len(decoded.reports)
        a.agent_statuses += len(decoded.statuses)
        metrics.MESSAGES.labels("committed").inc(len(batch) - dead)
        metrics.MESSAGES.labels("dead_lettered").inc(dead)
        metrics.IN_FLIGHT.labels(self.settings.client_id).set(a.messages_in_flight)
        committed_at = datetime.now(UTC)
        if self.settings.receipts:
            self._publish_receipts(decoded, committed_at)
        for newest in decoded.newest:
            metrics.READ_TO_COMMIT.observe((committed_at - newest).total_seconds())
        if decoded.rows:
            metrics.BATCH_EVENTS.observe(len(decoded.rows))
            metrics.BATCH_MESSAGES.observe(len(batch))
            self._period.batches += 1
            self._period.events += len(decoded.rows)
            lag = (committed_at - max(decoded.newest)).total_seconds()
            metrics.LAG.observe(lag)
            self._period.lag_s = lag
        for item, reason in decoded.dead:
            log.warning("dead-lettered a message on %s: %s", item.topic, reason)

    def _publish_receipts(self, decoded: _Decoded, committed_at: datetime) -> None:
        """Tell the agents what is committed now. QoS 1 and retained: a receipt waits
        in the agent's persistent session while it is away, and the newest per device
        greets a new session. A receipt lost anyway costs the edge a resend, never a
        read; published while the broker is away, paho sends it after reconnecting."""
        for receipt in decoded.receipts():
            self._client.publish(
                topics.receipts(receipt.site, receipt.device),
                receipts.encode_receipt(receipt, committed_at),
                qos=1,
                retain=True,
            )


class _Stopping(Exception):
    """Raised inside the reconnect loop when the worker was told to stop."""

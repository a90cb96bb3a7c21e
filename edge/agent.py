"""The edge agent: one reader thread per serial device, one publisher draining the outbox."""

from __future__ import annotations

import contextlib
import logging
import queue
import termios
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import serial

from edge.barcode import BarcodeRead, BarcodeSettings
from edge.config import AgentConfig, DeviceConfig
from edge.drivers import BarcodeDriver, Driver, MercuryDriver, R2000Driver, Read, RfidRead
from edge.epc import decode_epc
from edge.outbox import Outbox, OutboxBounds, PendingText
from edge.smoothing import Smoother, TagPass
from parceltrack import topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.errors import WireFormatError
from parceltrack.events import EventKind, ScanEvent
from parceltrack.health import encode_health, encode_status
from parceltrack.mqtt import Message, MqttClient, ReasonCode
from parceltrack.receipts import decode_receipt

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    connected: bool = False
    frames_ok: int = 0
    frames_bad: int = 0
    reads: int = 0  # events of kind read/seen written to the outbox
    noreads: int = 0
    reopens: int = 0
    raw_reads: int = 0  # RFID tag reads before smoothing
    passes_open: int = 0
    passes_closed: int = 0  # smoothing output: seen events made from the raw reads
    errors: int = 0
    timeouts: int = 0
    unknown: int = 0
    clock_skews: int = 0
    keepalives: int = 0
    firmware: str | None = None
    last_read: datetime | None = None


def make_driver(device: DeviceConfig) -> Driver:
    if device.protocol == "mercury":
        return MercuryDriver(device.mercury.settings())
    if device.protocol == "r2000":
        return R2000Driver(device.r2000.settings())
    b = device.barcode
    return BarcodeDriver(
        BarcodeSettings(
            header=b.header.encode(), terminator=b.terminator.encode(), aim=b.aim,
            noread=b.noread, separator=b.separator,
        )
    )  # fmt: skip


@dataclass
class DeviceReader:
    """Reads one device's port, turns frames into events, appends them to the outbox.

    The port is opened with serial.serial_for_url, so a pty path, socket:// and
    rfc2217:// are all the same here; a port that vanishes is reopened with backoff.
    """

    device: DeviceConfig
    site: str
    boot: int
    outbox: Outbox
    stop: threading.Event
    health: DeviceHealth = field(default_factory=DeviceHealth)

    def __post_init__(self) -> None:
        self._driver = make_driver(self.device)
        self._smoother = Smoother(self.device.smoothing.settings()) if self.device.is_rfid else None
        self._seq = 0

    def run(self) -> None:
        backoff = 0.2
        while not self.stop.is_set():
            try:
                port = serial.serial_for_url(
                    self.device.port, baudrate=self.device.baudrate, timeout=0.05
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                log.warning(
                    "device %s: cannot open %s (%s); retrying in %.1fs",
                    self.device.id,
                    self.device.port,
                    exc,
                    backoff,
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.health.connected = True
            log.info("device %s: opened %s", self.device.id, self.device.port)
            try:
                self._converse(port)
            finally:
                with contextlib.suppress(serial.SerialException, OSError):
                    port.close()
                self.health.connected = False
                self._flush_passes(self._smoother.close_all() if self._smoother else [])
            if not self.stop.is_set():
                self.health.reopens += 1

    def _converse(self, port: serial.Serial) -> None:
        driver = self._driver
        try:
            port.write(driver.on_open(time.time()))
            while not self.stop.is_set():
                data = port.read(max(1, port.in_waiting))
                now = time.time()
                self._handle(driver.feed(data, now), now)
                out = driver.poll(now)
                if out:
                    port.write(out)
            port.write(driver.on_close())
            port.flush()
        except (serial.SerialException, OSError, termios.error) as exc:
            # termios.error: tcdrain on a port whose device just vanished (EIO).
            log.warning("device %s: port lost (%s)", self.device.id, exc)

    def _handle(self, reads: list[Read], now: float) -> None:
        events: list[ScanEvent] = []
        for read in reads:
            if isinstance(read, RfidRead):
                assert self._smoother is not None
                self._smoother.add(read)
            else:
                events.append(self._barcode_event(read, now))
        passes = self._smoother.close_quiet(now) if self._smoother else []
        events.extend(self._pass_event(p) for p in passes)
        self._sync_health()
        if events:
            self.outbox.append(events)
            self.health.reads += sum(1 for e in events if e.kind != EventKind.NOREAD)
            self.health.noreads += sum(1 for e in events if e.kind == EventKind.NOREAD)
            self.health.last_read = datetime.fromtimestamp(now, UTC)

    def _flush_passes(self, passes: list[TagPass]) -> None:
        if passes:
            self.outbox.append([self._pass_event(p) for p in passes])
            self.health.reads += len(passes)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _barcode_event(self, read: BarcodeRead, now: float) -> ScanEvent:
        return ScanEvent(
            device=self.device.id, boot=self.boot, seq=self._next_seq(),
            ts=datetime.fromtimestamp(now, UTC), site=self.site,
            read_point=self.device.read_point,
            kind=EventKind.NOREAD if read.is_noread else EventKind.READ,
            code=read.code, symbology=read.symbology, tracking_id=read.tracking_id,
        )  # fmt: skip

    def _pass_event(self, p: TagPass) -> ScanEvent:
        decoded = decode_epc(p.epc_hex)
        first = datetime.fromtimestamp(p.first_seen, UTC)
        return ScanEvent(
            device=self.device.id, boot=self.boot, seq=self._next_seq(), ts=first,
            site=self.site, read_point=self.device.read_point, kind=EventKind.SEEN,
            code=p.epc_hex, epc=decoded.uri if decoded else None, rssi=p.peak_rssi,
            antenna=p.peak_antenna, read_count=p.read_count, first_seen=first,
            last_seen=datetime.fromtimestamp(p.last_seen, UTC), direction=p.direction,
        )  # fmt: skip

    def _sync_health(self) -> None:
        s, h = self._driver.stats, self.health
        h.frames_ok, h.frames_bad = s.frames_ok, s.frames_bad
        h.raw_reads, h.errors, h.timeouts = s.raw_reads, s.errors, s.timeouts
        h.unknown, h.clock_skews, h.keepalives = s.unknown, s.clock_skews, s.keepalives
        h.firmware = getattr(self._driver, "firmware", None)
        if self._smoother:
            h.passes_open = self._smoother.open_passes
            h.passes_closed = self._smoother.passes_closed


class Publisher:
    """Drains the outbox oldest first; an event leaves the outbox only when a commit
    receipt of the ingest covers it. A PUBACK marks it acknowledged; acknowledged
    events without a receipt after `resend_after_s` are published again.

    The session is persistent and subscribed to the receipts of the agent's devices,
    so receipts published while the agent was away (restarting, or the network
    down) wait for it at the broker; the newest receipt per device is also retained.

    Events already waiting when the agent starts or the broker comes back are the
    backlog; newer ones are live. Each pump alternates a live batch and a backlog
    batch, and the backlog is paced by a token bucket (`replay_rate` events/s), so a
    long backlog neither starves live reads nor floods the broker.
    """

    def __init__(self, config: AgentConfig, broker: BrokerAddress, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.max_in_flight = 64
        # PUBACKs and receipts arrive on paho's thread, which holds paho's lock while
        # calling back; so the callbacks only queue them and pump() (one thread) does
        # the rest.
        self._acked_mids: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._receipts: queue.SimpleQueue[tuple[str, bytes, int, int]] = queue.SimpleQueue()
        self.receipted = 0  # events removed from the outbox by receipts
        self.resent = 0  # events published again because no receipt came in time
        self._next_resend_check = 0.0
        self._connected_again = threading.Event()
        # Set by our on_connect (after _connected_again), so a pump that sees it
        # online also sees the reconnect to mark; paho's is_connected() turns true
        # before on_connect has run.
        self._online = threading.Event()
        self._in_flight: dict[int, list[int]] = {}
        self._live_cursor = outbox.max_row_id()
        # Ranges [after_row, last_row] of backlog still to publish, oldest first.
        self._backlog: list[list[int]] = [[0, self._live_cursor]] if self._live_cursor else []
        self._rate = config.agent.replay_rate
        self._burst = max(float(config.agent.batch_max_events), self._rate * 0.2)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self.published = 0
        self.replayed = 0
        site, agent = config.agent.site, config.agent.id
        self._status_topic = topics.agent_status(site, agent)
        self._receipt_topics = [topics.receipts(site, d.id) for d in config.devices]
        # Receipts are acknowledged only once the outbox has applied them (manual
        # acks): one that reached an agent killed before applying it is sent again to
        # the next agent life by the persistent session, instead of being lost with it
        # (the events it covered would then wait for a resend).
        self.client = MqttClient(f"agent-{agent}", broker, persistent=True, manual_ack=True)
        self.client.set_will(self._status_topic, encode_status("offline"), qos=1, retain=True)
        self.client.on_connect(self._on_connect)
        self.client.on_publish(self._on_publish)
        self.client.on_disconnect(self._on_disconnect)
        self.client.on_message(self._on_message)

    def _on_connect(self, rc: ReasonCode) -> None:
        log.info("agent %s connected to broker (%s)", self.config.agent.id, rc)
        # Again on every connect: a broker that lost its state lost the subscriptions.
        self.client.subscribe(self._receipt_topics, qos=1)
        status = encode_status("online", datetime.now(UTC))
        self.client.publish(self._status_topic, status, qos=1, retain=True)
        self._connected_again.set()
        self._online.set()

    def _on_disconnect(self, rc: ReasonCode) -> None:
        self._online.clear()
        log.warning("agent %s lost the broker (%s)", self.config.agent.id, rc)

    @property
    def online(self) -> bool:
        return self._online.is_set() and self.client.is_connected()

    def _on_publish(self, mid: int, _rc: ReasonCode) -> None:
        self._acked_mids.put(mid)

    def _on_message(self, msg: Message) -> None:
        self._receipts.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def start(self) -> None:
        self.client.start()

    @property
    def backlog_remaining(self) -> int:
        return sum(last - after for after, last in self._backlog)

    def pump(self) -> int:
        """Publish what fits in flight; mark what the broker acknowledged; delete what
        receipts cover; publish again what waited too long for its receipt."""
        self._settle_acks()
        self._settle_receipts()
        if not self.online:
            # Nothing new goes to paho while the broker is away: it would sit in paho's
            # memory, and be sent out of order with what follows the reconnect. Events
            # wait in the outbox instead and become backlog.
            return 0
        if self._connected_again.is_set():
            self._connected_again.clear()
            self._mark_backlog()
        batch = self.config.agent.batch_max_events
        sent = 0
        while len(self._in_flight) < self.max_in_flight:
            progressed = False
            live = self.outbox.oldest_texts(self._live_cursor, batch)
            if live:
                self._live_cursor = live[-1].row_id
                sent += self._publish(live)
                progressed = True
            if self._backlog and self._take_tokens() >= 1:
                after, last = self._backlog[0]
                chunk = self.outbox.oldest_texts(
                    after, min(batch, int(self._tokens)), upto_row=last
                )
                if chunk:
                    self._backlog[0][0] = chunk[-1].row_id
                    self._tokens -= len(chunk)
                    self.replayed += len(chunk)
                    sent += self._publish(chunk)
                    progressed = True
                else:
                    self._backlog.pop(0)
            if not progressed:
                break
        sent += self._resend_due()
        self.published += sent
        return sent

    def _resend_due(self) -> int:
        """Publish again, within the replay pace, acknowledged events whose receipt is
        overdue: the broker may have lost them (a crash, or no subscriber after a
        restart). Checked twice a second, not on every pump."""
        now = time.monotonic()
        if now < self._next_resend_check or len(self._in_flight) >= self.max_in_flight:
            return 0
        self._next_resend_check = now + 0.5
        tokens = int(self._take_tokens())
        if tokens < 1:
            return 0
        agent = self.config.agent
        due = self.outbox.due_for_resend(
            min(agent.batch_max_events * 4, tokens), agent.resend_after_s, agent.resend_max_s
        )
        if due:
            self._tokens -= len(due)
            self.resent += len(due)
            log.info("agent %s: publishing %d events again, no receipt within %.0fs",
                     agent.id, len(due), agent.resend_after_s)  # fmt: skip
        return self._publish(due) if due else 0

    def _mark_backlog(self) -> None:
        """After a (re)connect, whatever piled up unpublished becomes backlog."""
        top = self.outbox.max_row_id()
        if top > self._live_cursor:
            self._backlog.append([self._live_cursor, top])
            self._live_cursor = top
        if self._backlog:
            log.info("agent %s: replaying a backlog of up to %d events at <= %.0f/s",
                     self.config.agent.id, self.backlog_remaining, self._rate)  # fmt: skip

    def _take_tokens(self) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        return self._tokens

    def _publish(self, pending: list[PendingText]) -> int:
        batch = self.config.agent.batch_max_events
        for device, group in _by_device(pending).items():
            for i in range(0, len(group), batch):
                chunk = group[i : i + batch]
                payload = wire.encode_batch_texts(
                    self.config.agent.site, device, self.config.agent.id, [p.text for p in chunk]
                )
                info = self.client.publish(
                    topics.events(self.config.agent.site, device), payload, qos=1
                )
                self._in_flight[info.mid] = [p.row_id for p in chunk]
        return len(pending)

    def _settle_acks(self) -> None:
        # Every mid published is recorded in _in_flight before this runs (same thread),
        # so an unknown mid is some other message's (the retained status): ignore it.
        done: list[int] = []
        while not self._acked_mids.empty():
            done.extend(self._in_flight.pop(self._acked_mids.get(), ()))
        if done:
            self.outbox.mark_acked(done)

    def _settle_receipts(self) -> None:
        while not self._receipts.empty():
            topic, payload, mid, qos = self._receipts.get()
            if payload:  # empty: a retained receipt being cleared
                try:
                    receipt = decode_receipt(topic, payload)
                except WireFormatError as exc:
                    log.warning("agent %s: ignored a receipt on %s: %s", self.config.agent.id,
                                topic, exc)  # fmt: skip
                else:
                    self.receipted += self.outbox.apply_receipt(
                        receipt.device, receipt.boot, receipt.ranges
                    )
            if qos > 0:
                self.client.ack(mid, qos)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def publish_health(self, readers: list[DeviceReader]) -> None:
        depth, oldest = self.outbox.depth()
        unreceipted, receipt_lag = self.outbox.unreceipted()
        for r in readers:
            counters = asdict(r.health)
            del counters["last_read"]  # a datetime, which was never part of the health message
            connected = counters.pop("connected")
            payload = encode_health(
                r.device.id, datetime.now(UTC), connected, read_point=r.device.read_point,
                protocol=r.device.protocol, **counters,
                outbox_depth=depth, outbox_oldest_s=oldest,
                outbox_dropped=self.outbox.dropped,
                outbox_quarantined=self.outbox.quarantined,
                outbox_corrupt_moved_to=(
                    str(self.outbox.corrupt_moved_to) if self.outbox.corrupt_moved_to else None
                ),
                backlog=self.backlog_remaining,
                unreceipted=unreceipted, receipt_lag_s=receipt_lag,
                receipted=self.receipted, resent=self.resent,
            )  # fmt: skip
            self.client.publish(topics.health(self.config.agent.site, r.device.id), payload, qos=0)

    def close(self) -> None:
        status = encode_status("offline", datetime.now(UTC))
        self.client.publish(self._status_topic, status, qos=1, retain=True)
        self.client.stop()


def _by_device(pending: list[PendingText]) -> dict[str, list[PendingText]]:
    groups: dict[str, list[PendingText]] = {}
    for p in pending:
        groups.setdefault(p.device, []).append(p)
    return groups


def run_agent(config: AgentConfig, broker: BrokerAddress, stop: threading.Event) -> None:
    """Run until `stop` is set: readers fill the outbox, the publisher drains it."""
    bounds = OutboxBounds(config.agent.outbox_max_events, config.agent.outbox_max_age_s)
    outbox = Outbox(config.outbox_path, bounds)
    boot = outbox.next_boot_epoch()
    depth, _ = outbox.depth()
    log.info("agent %s boot %d: %d events waiting in the outbox", config.agent.id, boot, depth)
    readers = [DeviceReader(d, config.agent.site, boot, outbox, stop) for d in config.devices]
    threads = [threading.Thread(target=r.run, name=r.device.id, daemon=True) for r in readers]
    for t in threads:
        t.start()
    publisher = Publisher(config, broker, outbox)
    publisher.start()
    next_health = time.monotonic()
    try:
        while not stop.is_set():
            if publisher.pump() == 0:
                stop.wait(0.02)
            if time.monotonic() >= next_health:
                outbox.expire()
                publisher.publish_health(readers)
                next_health = time.monotonic() + config.agent.health_interval_s
    finally:
        for t in threads:
            t.join(2)
        publisher.pump()
        publisher.close()
        outbox.close()

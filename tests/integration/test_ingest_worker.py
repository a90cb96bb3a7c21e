import json
import time
from datetime import UTC, datetime

import psycopg

from composition.services import PrivateMosquitto
from ingest.worker import IngestWorker
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.mqtt import MqttClient
from parceltrack.receipts import Receipt, decode_receipt
from parceltrack.wire import encode_batch
from tests.waiting import wait_until


def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = MqttClient(f"pub-{time.monotonic_ns()}", BrokerAddress.from_url(url))
    client.start()
    assert client.wait_connected()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(10)
    client.stop()


T0 = datetime.now(UTC)


def _batch(seqs: range, device: str = "scan-1") -> tuple[str, bytes]:
    now = T0  # a replay carries the time of the original read
    events = [
        ScanEvent(
            device=device,
            boot=7,
            seq=s,
            ts=now,
            site="LHR1",
            read_point="LHR1-TUN1",
            kind=EventKind.READ,
            code="RR473124829GB",
            tracking_id="RR473124829GB",
        )
        for s in seqs
    ]
    return topics.events("LHR1", device), encode_batch("LHR1", device, "agent-1", events)


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_valid_batches_are_written_once_and_replays_are_counted(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Batches reach the scan table; a replayed batch adds no rows and counts duplicates."""
    _publish(mqtt_server.url, [_batch(range(0, 100)), _batch(range(100, 200))])
    wait_until(lambda: _count(db_dsn, "scans") == 200, 15, "200 scans")
    _publish(mqtt_server.url, [_batch(range(50, 150))])
    wait_until(lambda: worker.accounts.events_duplicate >= 100, 10, "100 duplicates counted")
    assert _count(db_dsn, "scans") == 200
    a = worker.accounts
    assert (a.events_received, a.events_written, a.events_duplicate) == (300, 200, 100)
    assert a.balanced() and a.messages_in_flight == 0


def test_malformed_payloads_are_dead_lettered_without_blocking_valid_ones(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Bad payloads land in dead_letters with their reason; valid ones around them are stored."""
    topic = topics.events("LHR1", "scan-1")
    bad = [
        (topic, b"{not json"),
        (topic, json.dumps({"v": 9}).encode()),
        (topics.events("LHR1", "scan-2"), _batch(range(5))[1]),  # wrong device for topic
    ]
    _publish(mqtt_server.url, [_batch(range(0, 10)), *bad, _batch(range(10, 20))])
    wait_until(lambda: _count(db_dsn, "dead_letters") == 3, 15, "3 dead letters")
    wait_until(lambda: _count(db_dsn, "scans") == 20, 15, "20 scans")
    with psycopg.connect(db_dsn) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters ORDER BY 1")]
    assert any("Invalid JSON" in r for r in reasons)
    assert any("published on" in r for r in reasons)
    assert worker.accounts.messages_dead == 3


class ReceiptWatch:
    """Receipts of one device as an agent receives them (subscribed to its topic)."""

    def __init__(self, url: str, device: str) -> None:
        self.got: list[Receipt] = []
        self.client = MqttClient(f"receipts-{time.monotonic_ns()}", BrokerAddress.from_url(url))
        self.client.on_message(lambda m: self.got.append(decode_receipt(m.topic, m.payload)))
        subscribed: list[object] = []
        self.client.on_subscribe(subscribed.append)
        self.client.start()
        assert self.client.wait_connected()
        self.client.subscribe(topics.receipts("LHR1", device), qos=1)
        wait_until(lambda: subscribed, 10, "the SUBACK")

    def covered(self) -> set[int]:
        return {s for r in self.got for first, last in r.ranges for s in range(first, last + 1)}

    def close(self) -> None:
        self.client.stop()


def test_receipts_cover_written_duplicate_and_dead_lettered_events(
    worker: IngestWorker, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """After each commit the device's agent is told which sequence numbers are durable:
    written, found already stored, or kept in a dead letter; the newest is retained."""
    device = f"scan-r{time.monotonic_ns() % 10**9}"
    watch = ReceiptWatch(mqtt_server.url, device)
    try:
        topic, bad = _batch(range(20, 23), device)
        body = json.loads(bad)
        body["events"][1]["ts"] = "2001-01-01T00:00:00+00:00"  # an impossible timestamp
        _publish(mqtt_server.url, [_batch(range(0, 10), device), _batch(range(5, 13), device)])
        _publish(mqtt_server.url, [(topic, json.dumps(body).encode())])
        wait_until(lambda: watch.covered() >= set(range(13)) | {20, 21, 22}, 15, "the receipts")
        assert watch.covered() == set(range(13)) | {20, 21, 22}
        assert {r.boot for r in watch.got} == {7} and {r.device for r in watch.got} == {device}
        assert _count(db_dsn, "scans") >= 13 and worker.accounts.messages_dead >= 1
    finally:
        watch.close()
    late = ReceiptWatch(mqtt_server.url, device)  # a new session: the retained receipt
    try:
        wait_until(lambda: late.got, 10, "the retained receipt")
        assert late.got[-1].ranges[-1] == (20, 22)  # alone, or with 0-12 in one commit
    finally:
        late.close()

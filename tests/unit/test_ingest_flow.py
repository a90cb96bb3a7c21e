"""The ingest's flow control on paho's network thread: it never waits (issue 13)."""

import time
from datetime import UTC, datetime

from paho.mqtt.client import MQTTMessage

from ingest.worker import IngestSettings, IngestWorker, _Decoded
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.wire import encode_batch


def _message(mid: int) -> MQTTMessage:
    msg = MQTTMessage(mid, topics.events("LHR1", "scan-1").encode())
    msg.payload, msg.qos = b"{}", 1
    return msg


def test_messages_past_the_hold_limit_are_left_unacked_not_queued() -> None:
    """Up to max_in_flight + a batch are queued at once; the next is left to the broker
    (unacked, not counted) and a reconnect is asked for, all without waiting."""
    settings = IngestSettings(
        dsn="postgresql://unused", broker=BrokerAddress.from_url("mqtt://127.0.0.1:1"),
        max_in_flight=4, max_batch_messages=2,
    )  # fmt: skip
    worker = IngestWorker(settings)  # never started: only its callbacks are called
    started = time.monotonic()
    for mid in range(1, 8):
        worker._on_message(_message(mid))
    assert time.monotonic() - started < 0.5  # a full inbox used to block here for good
    assert worker.inbox_depth == 6 and worker.accounts.messages_received == 6
    assert worker.overflowed == 1 and worker._redeliver.is_set()
    assert worker.accounts.messages_in_flight == 6


def _scan_message(mid: int) -> MQTTMessage:
    now = datetime.now(UTC)
    events = [
        ScanEvent(
            device="scan-1", boot=7, seq=mid * 10 + i, ts=now, site="LHR1",
            read_point="LHR1-TUN1", kind=EventKind.READ, code="RR473124829GB",
            symbology="]C0", tracking_id="RR473124829GB",
        )
        for i in range(3)
    ]  # fmt: skip
    msg = MQTTMessage(mid, topics.events("LHR1", "scan-1").encode())
    msg.payload, msg.qos = encode_batch("LHR1", "scan-1", "agent-1", events), 1
    return msg


def test_messages_are_decoded_on_arrival_up_to_two_batches_ahead() -> None:
    """Messages are decoded as they arrive while at most two batches are held; later
    ones wait raw and decode at commit into the same rows, ranges and refusals."""
    settings = IngestSettings(
        dsn="postgresql://unused", broker=BrokerAddress.from_url("mqtt://127.0.0.1:1"),
        max_in_flight=10, max_batch_messages=2,
    )  # fmt: skip
    worker = IngestWorker(settings)  # never started: only its callbacks are called
    for mid in range(1, 7):
        worker._on_message(_scan_message(mid) if mid != 3 else _message(mid))
    held = [worker._inbox.get_nowait() for _ in range(6)]
    assert [item.outcome is not None for item in held] == [True] * 4 + [False] * 2
    ahead, at_commit = _Decoded(), _Decoded()
    for item in held[:4]:
        ahead.add(item)
    for item in held[4:]:
        at_commit.add(item)
    assert len(ahead.rows) == 9 and len(at_commit.rows) == 6
    assert [reason for _, reason in ahead.dead] == ["v: Field required (and 4 more)"]
    ranges = [r.ranges for r in ahead.receipts()] + [r.ranges for r in at_commit.receipts()]
    assert ranges == [((10, 12), (20, 22), (40, 42)), ((50, 52), (60, 62))]

"""The ingest's flow control on paho's network thread: it never waits (issue 13)."""

import time

from paho.mqtt.client import MQTTMessage

from ingest.worker import IngestSettings, IngestWorker
from parceltrack import topics
from parceltrack.config import BrokerAddress


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

"""Fixtures for the integration tests: a real ingest worker on the private services."""

import threading
import time
from collections.abc import Iterator

import pytest

from composition.services import PrivateMosquitto
from ingest.worker import IngestSettings, IngestWorker
from parceltrack.config import BrokerAddress
from tests.waiting import wait_until


@pytest.fixture
def worker(db_dsn: str, mqtt_server: PrivateMosquitto) -> Iterator[IngestWorker]:
    """An ingest worker writing to a fresh database, subscribed before the test runs."""
    w = IngestWorker(
        IngestSettings(
            dsn=db_dsn,
            broker=BrokerAddress.from_url(mqtt_server.url),
            client_id=f"ingest-{time.monotonic_ns()}",
        )
    )
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    wait_until(w.subscribed.is_set, 30, "the worker subscribed")
    yield w
    w.stop()
    thread.join(15)

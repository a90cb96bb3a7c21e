"""`parceltrack notify` rides out a PostgreSQL outage: it keeps running, and messages
queued before and after the outage are all delivered once the database is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from composition.pipeline import create_database
from composition.services import PrivatePostgres
from storage.migrations import migrate
from storage.outbound import Outbound, Webhook, enqueue
from tests.notify.receivers import webhook_receiver
from tests.notify.test_notify_process import notify_process
from tests.waiting import wait_until


@pytest.fixture
def restartable(services_dir: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(services_dir / "notify-outage")
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def _delivered(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM outbound_deliveries WHERE state = 'delivered'"
            ).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def _queue(dsn: str, n: int, url: str) -> None:
    with psycopg.connect(dsn) as conn:
        enqueue(conn, Outbound(url, "s:1", f"k{n}", "parcel.sorted", Webhook({"n": n}, "k")))


def test_notify_survives_a_database_restart(restartable: PrivatePostgres, tmp_path: Path) -> None:
    """Stopping and starting PostgreSQL under a running notify process loses nothing."""
    create_database(restartable.dsn(), "notify")
    dsn = restartable.dsn("notify")
    migrate(dsn)
    with (
        webhook_receiver(lambda _r, _n: "ok") as receiver,
        notify_process(dsn, tmp_path / "notify.log", "--backoff-base", "0.2") as proc,
    ):
        _queue(dsn, 1, receiver.url)
        wait_until(lambda: _delivered(dsn) == 1, 20, "the first message")
        restartable.stop()
        time.sleep(2.0)  # the notifier polls 4 times a second: it meets the outage
        assert proc.poll() is None
        restartable.start()
        _queue(dsn, 2, receiver.url)
        wait_until(lambda: _delivered(dsn) == 2, 40, "the message queued after the restart")
        assert proc.poll() is None
    assert sorted(r.headers["idempotency-key"] for r in receiver.requests) == ["k1", "k2"]

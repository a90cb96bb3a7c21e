"""Nothing lost even when the broker forgets (issue 13): the edge keeps each read until
the ingest's commit receipt covers it, so what a crashed, restarted or memoryless
broker drops is published again, and deduplicated.

Real Mosquitto, real PostgreSQL, two ingest worker processes on one shared
subscription, and the edge agent's own Publisher and Outbox fed reads at a steady
pace. Each test counts read by read: every id the edge took is stored exactly once,
and the outbox ends empty (every read receipted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from composition.services import PrivateMosquitto, PrivatePostgres
from edge.agent import Publisher
from edge.outbox import Outbox
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import migrate
from tests.plugins.edge_feed import EdgeFeed, feed_config, stored_event_ids
from tests.plugins.ingest_chaos import IngestProcess, count_scans
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

MOSQUITTO_DEFAULT_AUTOSAVE_S = 1800  # what deploy/mosquitto/mosquitto.conf runs with


@dataclass
class Rig:
    pg: PrivatePostgres
    broker: PrivateMosquitto
    workers: list[IngestProcess]
    folder: Path

    @property
    def dsn(self) -> str:
        return self.pg.dsn()

    def feed(self, total: int = 6000) -> EdgeFeed:
        return EdgeFeed(self.folder, self.broker.url, total=total).start()


def _rig(services_dir: Path, tmp_path: Path, name: str, broker: PrivateMosquitto) -> Iterator[Rig]:
    pg = PrivatePostgres(services_dir / f"pg-{name}-{time.monotonic_ns()}")
    pg.start()
    broker.start()
    workers: list[IngestProcess] = []
    try:
        migrate(pg.dsn())
        for n in (1, 2):
            log = tmp_path / f"ingest-{n}.log"
            workers.append(IngestProcess(pg.dsn(), broker.url, f"ingest-{n}", log).start())
        yield Rig(pg, broker, workers, tmp_path)
    finally:
        for w in workers:
            w.stop()
        broker.destroy()
        pg.destroy()


def _broker(services_dir: Path, name: str, **options: object) -> PrivateMosquitto:
    return PrivateMosquitto(services_dir / f"mq-{name}-{time.monotonic_ns()}", **options)  # type: ignore[arg-type]


@pytest.fixture
def production_broker_rig(services_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    broker = _broker(services_dir, "crash", autosave_interval=MOSQUITTO_DEFAULT_AUTOSAVE_S)
    yield from _rig(services_dir, tmp_path, "crash", broker)


@pytest.fixture(params=[True, False], ids=["persistent-broker", "broker-without-persistence"])
def restart_rig(
    services_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Rig]:
    """A rig whose broker saves every second, or keeps nothing across a restart."""
    broker = _broker(services_dir, "restart", persistence=request.param)
    yield from _rig(services_dir, tmp_path, "restart", broker)


def _each_read_once(rig: Rig, feed: EdgeFeed, what: str) -> None:
    """Wait for every read to be stored and receipted, then count read by read."""
    try:
        wait_until(feed.fed.is_set, 120, "the edge to take every read")
        wait_until(lambda: count_scans(rig.dsn)[1] >= len(feed.ids), 120, "every read stored")
        wait_until(lambda: feed.waiting() == 0, 60, "every read receipted (outbox empty)")
        time.sleep(1.0)  # a read stored twice would show now
        stored = stored_event_ids(rig.dsn)
        taken = set(feed.ids)
        lost = len(taken - set(stored))
        doubled = sum(1 for n in stored.values() if n > 1)
        strangers = len(set(stored) - taken)
        print(
            f"\n{what}: reads taken {len(taken)}, stored {sum(stored.values())}, lost {lost}, "
            f"stored twice {doubled}, published again {feed.publisher.resent}, "
            f"receipted {feed.publisher.receipted}"
        )
        assert (lost, doubled, strangers) == (0, 0, 0)
        assert len(feed.ids) == len(taken)  # the feed itself never reused an id
    finally:
        feed.stop()


def test_broker_killed_with_a_backlog_loses_nothing(production_broker_rig: Rig) -> None:
    """Database stopped so a backlog builds in the broker, broker SIGKILLed with the
    production autosave_interval, both restarted: every read stored once."""
    rig = production_broker_rig
    feed = rig.feed()
    wait_until(lambda: count_scans(rig.dsn)[0] >= 500, 60, "the first commits")
    rig.pg.stop()
    time.sleep(4)  # the backlog builds up in the broker (the workers hold at most 600 each)
    rig.broker.kill()
    time.sleep(1)
    rig.broker.start()
    rig.pg.start()
    _each_read_once(rig, feed, "broker SIGKILL after a 4 s database outage")


def test_broker_restart_under_load_loses_nothing(restart_rig: Rig) -> None:
    """Broker stopped (SIGTERM) after a 3 s database outage and started again while the
    workers hold shared subscriptions and the edge keeps publishing, nothing held back;
    with persistence (Mosquitto
    2.0.11 forgets the shared subscriptions) and without (it forgets everything):
    every read stored once."""
    rig = restart_rig
    feed = rig.feed()
    wait_until(lambda: count_scans(rig.dsn)[0] >= 1000, 60, "the first commits")
    # A short database outage first, so the broker holds a backlog when it restarts.
    rig.pg.stop()
    time.sleep(3)
    rig.broker.stop()
    time.sleep(1)
    rig.broker.start()
    rig.pg.start()
    kind = "persistent" if rig.broker.persistence else "memoryless"
    _each_read_once(rig, feed, f"graceful restart of a {kind} broker under load")


def _events(boot: int, n: int) -> list[ScanEvent]:
    now = datetime.now(UTC)
    return [
        ScanEvent("scan-1", boot, s, now, "LHR1", "LHR1-TUN1", EventKind.READ, f"C{s}")
        for s in range(n)
    ]


def _pump_until(publisher: Publisher, condition: Callable[[], bool], what: str) -> None:
    def pumped() -> bool:
        publisher.pump()
        return condition()

    wait_until(pumped, 30, what)


def test_a_restarted_agent_learns_from_receipts_instead_of_replaying(
    services_dir: Path, db_dsn: str, tmp_path: Path
) -> None:
    """Reads the broker acknowledged while the only ingest worker was dead are committed
    while the agent is down; the restarted agent gets the receipts that waited in its
    session and empties its outbox without publishing any of them again."""
    broker = _broker(services_dir, "agent-restart")
    broker.start()
    ingest = IngestProcess(db_dsn, broker.url, "ingest-r", tmp_path / "ingest.log").start()
    config = feed_config(tmp_path, ("scan-1",), resend_after_s=120.0)
    address = BrokerAddress.from_url(broker.url)
    try:
        ingest.kill9()  # its session stays subscribed: the broker queues the reads for it
        outbox = Outbox(config.outbox_path)
        first = Publisher(config, address, outbox)
        first.start()
        outbox.append(_events(outbox.next_boot_epoch(), 200))
        _pump_until(first, lambda: outbox.unreceipted()[0] == 200, "200 reads acknowledged")
        first.close()
        outbox.close()
        ingest.start()  # same client id: it commits the queue; receipts wait for the agent
        wait_until(lambda: count_scans(db_dsn) == (200, 200), 30, "the reads committed")
        outbox = Outbox(config.outbox_path)
        second = Publisher(config, address, outbox)
        second.start()
        try:
            _pump_until(second, lambda: outbox.depth()[0] == 0, "the outbox emptied by receipts")
            assert (second.published, second.receipted) == (0, 200)
        finally:
            second.close()
            outbox.close()
        assert count_scans(db_dsn) == (200, 200)
    finally:
        ingest.stop()
        broker.destroy()

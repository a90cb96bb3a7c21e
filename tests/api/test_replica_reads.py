"""The API reading from a real streaming replica: customers never see a parcel go back in time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.replica import COOKIE, POSITION, ReadRouting
from composition.services import PrivateMosquitto, PrivatePostgres
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import migrate
from tests.api.conftest import SITE, Seeded, seed, settings_for
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def replicated(services_dir: Path) -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    root = services_dir / f"api-replica-{time.monotonic_ns()}"
    primary = PrivatePostgres(root / "primary")
    primary.start()
    migrate(primary.dsn())
    replica = primary.replica(root / "replica")
    replica.start()
    try:
        yield primary, replica
    finally:
        replica.destroy()
        primary.destroy()


def _replica_sql(replica: PrivatePostgres, sql: str) -> object:
    with psycopg.connect(replica.dsn(), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def _caught_up(primary: PrivatePostgres, replica: PrivatePostgres) -> bool:
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return bool(
        _replica_sql(replica, f"SELECT pg_last_wal_replay_lsn() >= '{row[0] if row else 0}'")
    )


def test_a_customer_never_sees_older_state_than_already_seen(
    replicated: tuple[PrivatePostgres, PrivatePostgres], mqtt_server: PrivateMosquitto
) -> None:
    """With replay paused, a customer who saw a new scan keeps seeing it (read from the
    primary by its position), while a client with no position may read the replica."""
    primary, replica = replicated
    seeded: Seeded = seed(primary.dsn())
    wait_until(lambda: _caught_up(primary, replica), 15, "the replica caught up")
    app = create_app(settings_for(primary.dsn(), mqtt_server, read_dsn=replica.dsn()))
    with TestClient(app) as customer, TestClient(app) as stranger:
        reads: ReadRouting = app.state.reads
        wait_until(lambda: reads.replica_usable(), 10, "the probe finding the replica")
        path = f"/v1/parcels/{seeded.on_conveyor}"
        before = customer.get(path)
        assert before.status_code == 200 and POSITION in before.headers
        assert reads.served["replica"] == 1
        events = len(before.json()["timeline"])

        _replica_sql(replica, "SELECT pg_wal_replay_pause()")
        try:
            scan = ScanEvent(
                device=f"{SITE}-SRT1-dev", boot=9, seq=1, ts=datetime.now(UTC), site=SITE,
                read_point=f"{SITE}-SRT1", kind=EventKind.READ, code=seeded.on_conveyor,
                tracking_id=seeded.on_conveyor,
            )  # fmt: skip
            with psycopg.connect(primary.dsn()) as conn:
                write_scans(conn, [scan], ScanPartitions(False))
            # The replica is now behind: after the bound, reads with no position leave it.
            reads.max_lag_s = 0.3
            wait_until(lambda: not reads.replica_usable(), 10, "the probe seeing the lag")
            seen = customer.get(path)
            assert len(seen.json()["timeline"]) == events + 1
            assert customer.cookies.get(COOKIE) == seen.headers[POSITION]
            # Even if the bound were loose, the customer's position keeps it off the
            # lagging replica: it never sees the scan disappear.
            reads.max_lag_s = 3600
            wait_until(lambda: reads.replica_usable(), 10, "the probe trusting the replica")
            again = customer.get(path)
            assert len(again.json()["timeline"]) == events + 1
            # A client with no position is served by the replica, at most the bound behind.
            assert len(stranger.get(path).json()["timeline"]) == events
        finally:
            _replica_sql(replica, "SELECT pg_wal_replay_resume()")
        wait_until(lambda: _caught_up(primary, replica), 15, "replay resumed")
        served = dict(reads.served)
        latest = customer.get(path)
        assert len(latest.json()["timeline"]) == events + 1
        assert reads.served["replica"] == served["replica"] + 1

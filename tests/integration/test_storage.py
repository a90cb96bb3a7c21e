from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest.store import ScanPartitions, write_dead_letter, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import MIGRATIONS, migrate

T0 = datetime.now(UTC).replace(microsecond=123456)


def _events(n: int, boot: int = 1, start: int = 0, day_shift: int = 0) -> list[ScanEvent]:
    return [
        ScanEvent(
            device="scan-1",
            boot=boot,
            seq=start + i,
            ts=T0 - timedelta(days=day_shift, seconds=i),
            site="LHR1",
            read_point="LHR1-TUN1",
            kind=EventKind.READ,
            code="RR473124829GB",
            tracking_id="RR473124829GB",
        )
        for i in range(n)
    ]


def _partitions(conn: psycopg.Connection[Any]) -> ScanPartitions:
    from storage.migrations import has_timescale

    return ScanPartitions(has_timescale(conn))


def test_migrate_is_idempotent(storage_empty_dsn: str) -> None:
    """The first run applies every migration; a second run applies none."""
    assert migrate(storage_empty_dsn) == [m.version for m in MIGRATIONS]
    assert migrate(storage_empty_dsn) == []


def test_replayed_events_are_written_once(storage_dsn: str) -> None:
    """Writing the same events twice stores them once and counts the duplicates."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        parts = _partitions(conn)
        with conn.transaction():
            first = write_scans(conn, _events(100), parts)
        with conn.transaction():
            again = write_scans(conn, _events(150), parts)  # 100 replays + 50 new
        count = conn.execute("SELECT count(*) FROM scans").fetchone()
    assert (first.written, first.duplicates) == (100, 0)
    assert (again.written, again.duplicates) == (50, 100)
    assert count == (150,)


def test_duplicates_inside_one_batch_are_written_once(storage_dsn: str) -> None:
    """A batch that carries the same event twice (an MQTT redelivery) writes it once."""
    events = _events(10)
    with psycopg.connect(storage_dsn, autocommit=True) as conn, conn.transaction():
        result = write_scans(conn, events + events[:3], _partitions(conn))
    assert (result.written, result.duplicates) == (10, 3)


def test_late_events_from_other_days_land_in_their_partitions(storage_dsn: str) -> None:
    """Events days old (replayed from an outbox) are stored; the table is time-partitioned."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        with conn.transaction():
            write_scans(conn, _events(5, day_shift=3) + _events(5, boot=2), _partitions(conn))
        days = conn.execute("SELECT count(DISTINCT ts::date) FROM scans").fetchone()
        timestamps = conn.execute("SELECT min(ts) FROM scans").fetchone()
    assert days is not None and days[0] >= 2
    assert timestamps is not None and timestamps[0].microsecond == 123456


def test_rolled_back_batch_leaves_nothing(storage_dsn: str) -> None:
    """A failed transaction writes no rows, so the batch can be retried whole."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        parts = _partitions(conn)
        try:
            with conn.transaction():
                write_scans(conn, _events(10), parts)
                raise RuntimeError("crash after COPY, before commit")
        except RuntimeError:
            pass
        with conn.transaction():
            result = write_scans(conn, _events(10), parts)
    assert result.written == 10


def test_dead_letters_keep_the_raw_payload_and_reason(storage_dsn: str) -> None:
    """A dead letter stores topic, the exact bytes and the reason."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        write_dead_letter(conn, "parceltrack/v1/x/y/events", b"\x00{bad", "Invalid JSON")
        row = conn.execute("SELECT topic, payload, reason FROM dead_letters").fetchone()
    assert row == ("parceltrack/v1/x/y/events", b"\x00{bad", "Invalid JSON")


def test_scan_table_is_partitioned_or_a_hypertable(storage_dsn: str, storage_backend: str) -> None:
    """On plain PostgreSQL scans is range-partitioned; on TimescaleDB it is a hypertable."""
    with psycopg.connect(storage_dsn) as conn:
        if storage_backend == "timescale":
            row = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'scans'"
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'scans'::regclass"
            ).fetchone()
    assert row == (1,)

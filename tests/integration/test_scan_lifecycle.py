from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.store import MergeAfterConflicts, ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from storage.model import ManifestEntry
from storage.reference import load_manifest

NOW = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=5)


def _events(n: int, read_point: str = "LHR1-TUN1", seq0: int = 0) -> list[ScanEvent]:
    return [
        ScanEvent(
            device="scan-1",
            boot=1,
            seq=seq0 + i,
            ts=NOW + timedelta(milliseconds=i),
            site="LHR1",
            read_point=read_point,
            kind=EventKind.NOREAD if i % 5 == 0 else EventKind.READ,
        )
        for i in range(n)
    ]


def test_throughput_per_minute_works_on_both_flavours(storage_dsn: str) -> None:
    """scan_throughput_1m and site_throughput_1m count scans per minute on either backend."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        parts = ScanPartitions(has_timescale(conn))
        with conn.transaction():
            write_scans(conn, _events(50) + _events(10, "LHR1-CHUTE", seq0=100), parts)
        rows = conn.execute(
            "SELECT read_point_id, scans, noreads FROM scan_throughput_1m "
            "WHERE bucket = date_trunc('minute', %s::timestamptz) ORDER BY 1",
            (NOW,),
        ).fetchall()
        site = conn.execute(
            "SELECT scans, noreads FROM site_throughput_1m WHERE site_id = 'LHR1'"
        ).fetchall()
    assert rows == [("LHR1-CHUTE", 10, 2), ("LHR1-TUN1", 50, 10)]
    assert site == [(60, 12)]


def test_optimistic_copy_falls_back_to_the_merge_on_replays(storage_dsn: str) -> None:
    """A batch with replayed events is refused by the unique index, then merged: once each."""
    mode = MergeAfterConflicts(batches=1)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        parts = ScanPartitions(has_timescale(conn))
        with conn.transaction():
            first = write_scans(conn, _events(20), parts, mode)
        with conn.transaction():
            again = write_scans(conn, _events(30), parts, mode)  # 20 replays, 10 new
        with conn.transaction():
            merged = write_scans(conn, _events(5, seq0=40), parts, mode)  # merge while wary
        count = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM scans").fetchone()
    assert (first.written, again.written, again.duplicates, merged.written) == (20, 10, 20, 5)
    assert mode.conflicts == 1
    assert count == (35, 35)


def test_manifest_loads_in_bulk_and_a_corrected_one_updates_it(storage_dsn: str) -> None:
    """A manifest of thousands of parcels loads with COPY; a corrected one updates them."""
    entries = [
        ManifestEntry(f"RR{i:09d}GB", "EMS", "FR75", epc=f"3074257BF7194E40{i:08X}")
        for i in range(5000)
    ]
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('LHR1', 'Heathrow')")
        assert load_manifest(conn, entries, "LHR1") == 5000
        fixed = ManifestEntry("RR000000007GB", "PAR", "DE10", "FRA1")
        assert load_manifest(conn, [fixed], "LHR1") == 1
        row = conn.execute(
            "SELECT service_class, destination, epc, origin_site, destination_site FROM parcels "
            "WHERE tracking_id = 'RR000000008GB'"
        ).fetchone()
        fixed_row = conn.execute(
            "SELECT service_class, destination_site, epc FROM parcels "
            "WHERE tracking_id = 'RR000000007GB'"
        ).fetchone()
        count = conn.execute("SELECT count(*) FROM parcels").fetchone()
    assert row == ("EMS", "FR75", "3074257BF7194E4000000008", "LHR1", None)
    # A correction that names no EPC keeps the one the parcel has.
    assert fixed_row == ("PAR", "FRA1", "3074257BF7194E4000000007")
    assert count == (5000,)


def test_plain_postgres_has_views_not_timescale_objects(
    storage_dsn: str, storage_backend: str
) -> None:
    """Without TimescaleDB the throughput relations are plain views with the same names."""
    if storage_backend == "timescale":
        pytest.skip("covered by the TimescaleDB tests below")
    with psycopg.connect(storage_dsn) as conn:
        kinds = conn.execute(
            "SELECT relname, relkind FROM pg_class "
            "WHERE relname IN ('scan_throughput_1m', 'site_throughput_1m') ORDER BY 1"
        ).fetchall()
    assert kinds == [("scan_throughput_1m", "v"), ("site_throughput_1m", "v")]


def _only_timescale(storage_backend: str) -> None:
    if storage_backend != "timescale":
        pytest.skip("TimescaleDB only (set PARCELTRACK_TIMESCALE_DSN)")


def test_timescale_policies_are_scheduled(storage_dsn: str, storage_backend: str) -> None:
    """Compression after 2 days, retention after 400 days and the aggregate refresh are jobs."""
    _only_timescale(storage_backend)
    with psycopg.connect(storage_dsn) as conn:
        jobs = dict(
            conn.execute(
                "SELECT proc_name, config FROM timescaledb_information.jobs "
                "WHERE proc_name IN ('policy_compression', 'policy_retention', "
                "'policy_refresh_continuous_aggregate')"
            ).fetchall()
        )
    assert set(jobs) == {
        "policy_compression", "policy_retention", "policy_refresh_continuous_aggregate",
    }  # fmt: skip
    assert jobs["policy_compression"]["compress_after"] == "2 days"
    assert jobs["policy_retention"]["drop_after"] == "400 days"
    assert jobs["policy_refresh_continuous_aggregate"]["start_offset"] == "3 days"


def test_timescale_compression_segments_by_read_point(
    storage_dsn: str, storage_backend: str
) -> None:
    """Compression segments by site and read point and orders by time, newest first."""
    _only_timescale(storage_backend)
    with psycopg.connect(storage_dsn) as conn:
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
            "FROM timescaledb_information.compression_settings "
            "WHERE hypertable_name = 'scans' ORDER BY attname"
        ).fetchall()
        interval = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'scans'"
        ).fetchone()
    assert settings == [
        ("read_point_id", 2, None, None), ("site_id", 1, None, None), ("ts", None, 1, False),
    ]  # fmt: skip
    assert interval == (timedelta(hours=6),)


def test_timescale_throughput_is_a_real_time_continuous_aggregate(
    storage_dsn: str, storage_backend: str
) -> None:
    """scan_throughput_1m is a continuous aggregate with real-time aggregation on."""
    _only_timescale(storage_backend)
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT materialized_only FROM timescaledb_information.continuous_aggregates "
            "WHERE view_name = 'scan_throughput_1m'"
        ).fetchone()
        with conn.transaction():
            write_scans(conn, _events(7), ScanPartitions(True))
        # Not refreshed yet: real-time aggregation answers from the raw rows.
        total = conn.execute("SELECT sum(scans) FROM scan_throughput_1m").fetchone()
    assert row == (False,)
    assert total == (7,)


def test_rfid_fields_survive_the_binary_copy(storage_dsn: str) -> None:
    """Every column of an RFID event is stored as sent, through both write paths."""
    seen = ScanEvent(
        device="gate-1", boot=3, seq=9, ts=NOW, site="LHR1", read_point="LHR1-DOOR4",
        kind=EventKind.SEEN, code="3074257BF7194E4000001A85", epc="3074257BF7194E4000001A85",
        rssi=-61.5, antenna=2, read_count=17, first_seen=NOW - timedelta(seconds=1),
        last_seen=NOW, direction="out",
    )  # fmt: skip
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        parts = ScanPartitions(has_timescale(conn))
        with conn.transaction():
            write_scans(conn, [seen], parts, MergeAfterConflicts())  # straight COPY
        with conn.transaction():
            replay = write_scans(conn, [seen], parts)  # the merge
        row = conn.execute(
            "SELECT ts, event_id, kind, epc, rssi, antenna, read_count, first_seen, last_seen, "
            "direction FROM scans"
        ).fetchone()
    assert replay.duplicates == 1
    assert row == (
        NOW, "gate-1:3:9", "seen", "3074257BF7194E4000001A85", -61.5, 2, 17,
        NOW - timedelta(seconds=1), NOW, "out",
    )  # fmt: skip

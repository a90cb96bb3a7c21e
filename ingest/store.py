"""Exactly-once writes of scan events: COPY, and a merge on the event id when needed.

COPY cannot skip conflicting rows. The unique index on (event_id, ts) is what
guarantees each event is stored once; how a batch gets past it is a matter of
speed. Most batches carry no duplicate at all, so a batch is first COPied
straight into `scans` inside a savepoint (as fast as a raw COPY). When the
index refuses it (a replay, a redelivery), the savepoint is rolled back and the
batch is copied into a temporary table and moved with INSERT ... ON CONFLICT DO
NOTHING; the difference between rows staged and rows inserted is the number of
duplicates. Conflicts come in runs (an outbox replaying after an outage), so
after one the next batches go straight to the merge for a while.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg import errors

from parceltrack.events import ScanEvent
from parceltrack.wire import ScanBatch
from storage.feed import record_commit

log = logging.getLogger(__name__)

SCAN_COPY_COLUMNS = (
    "ts", "event_id", "device_id", "site_id", "read_point_id", "kind", "tracking_id",
    "code", "symbology", "epc", "rssi", "antenna", "read_count", "first_seen",
    "last_seen", "direction",
)  # fmt: skip
_COLS = ", ".join(SCAN_COPY_COLUMNS)
# COPY in binary: the client skips formatting timestamps as text and the server
# skips parsing them (a third of the client's CPU per row, measured).
SCAN_COPY_TYPES = (
    "timestamptz", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "real", "smallint", "integer", "timestamptz", "timestamptz", "text",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class WriteResult:
    staged: int
    written: int

    @property
    def duplicates(self) -> int:
        return self.staged - self.written


def scan_row(e: ScanEvent) -> tuple[object, ...]:
    return (
        e.ts, e.id, e.device, e.site, e.read_point, e.kind.value, e.tracking_id,
        e.code, e.symbology, e.epc, e.rssi, e.antenna, e.read_count, e.first_seen,
        e.last_seen, e.direction,
    )  # fmt: skip


class ScanPartitions:
    """Daily partitions of `scans` on plain PostgreSQL, created before rows need them.

    Only days seen to exist at the start of a batch are remembered: a partition made
    inside a transaction that then rolls back is gone, and is made again next time.
    """

    def __init__(self, timescale: bool) -> None:
        self.timescale = timescale  # TimescaleDB makes its chunks by itself
        self._known: set[date] = set()

    def ensure(self, conn: psycopg.Connection[Any], days: Iterable[date]) -> None:
        missing = sorted(set(days) - self._known)
        if self.timescale or not missing:
            return
        names = [f"scans_{day:%Y%m%d}" for day in missing]
        existing = {
            str(name)
            for (name,) in conn.execute(
                "SELECT n FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL",
                (names,),
            )
        }
        for day, name in zip(missing, names, strict=True):
            if name in existing:
                self._known.add(day)
                continue
            lower = datetime.combine(day, time(), UTC)
            upper = lower + timedelta(days=1)
            # Two workers may race to create the same day; the lock makes one wait.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('scans_partitions'))")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF scans "
                f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
            )


class MergeAfterConflicts:
    """Remembers recent conflicts, so a run of replays goes straight to the merge."""

    def __init__(self, batches: int = 20) -> None:
        self.batches = batches
        self._left = 0
        self.conflicts = 0  # COPYs refused by the unique index, for the metrics

    def want_copy(self) -> bool:
        if self._left > 0:
            self._left -= 1
            return False
        return True

    def conflicted(self) -> None:
        self.conflicts += 1
        self._left = self.batches


def write_scans(
    conn: psycopg.Connection[Any],
    events: Sequence[ScanEvent],
    partitions: ScanPartitions,
    mode: MergeAfterConflicts | None = None,
) -> WriteResult:
    """Write events once each, inside the caller's transaction; report duplicates."""
    rows = [scan_row(e) for e in events]
    days = {e.ts.astimezone(UTC).date() for e in events}
    return write_scan_rows(conn, rows, days, partitions, mode)


def write_scan_rows(
    conn: psycopg.Connection[Any],
    rows: Sequence[tuple[object, ...]],
    days: Iterable[date],
    partitions: ScanPartitions,
    mode: MergeAfterConflicts | None = None,
) -> WriteResult:
    """Write rows (in SCAN_COPY_COLUMNS order) once each, inside the caller's transaction.

    `days` are the UTC dates of the rows' `ts` (the partitions they need). Without a
    `mode`, every batch goes through the merge.
    """
    if not rows:
        return WriteResult(0, 0)
    days = set(days)
    partitions.ensure(conn, days)
    record_commit(conn, days)  # the scan feed follows commits: storage/feed.py
    if mode is not None and mode.want_copy():
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint
                copy_scan_rows(cur, "scans", rows)
            return WriteResult(staged=len(rows), written=len(rows))
        except errors.UniqueViolation:
            mode.conflicted()
    return _merge(conn, rows)


def copy_scan_rows(
    cur: psycopg.Cursor[Any], table: str, rows: Sequence[tuple[object, ...]]
) -> None:
    """COPY rows (SCAN_COPY_COLUMNS order) into `table`, in binary."""
    with cur.copy(f"COPY {table} ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(SCAN_COPY_TYPES)
        for row in rows:
            copy.write_row(row)


def _merge(conn: psycopg.Connection[Any], rows: Sequence[tuple[object, ...]]) -> WriteResult:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS scans_stage "
        "(LIKE scans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur:
        copy_scan_rows(cur, "scans_stage", rows)
        cur.execute(
            f"INSERT INTO scans ({_COLS}) SELECT {_COLS} FROM scans_stage ON CONFLICT DO NOTHING"
        )
        written = cur.rowcount
    return WriteResult(staged=len(rows), written=written)


def write_dead_letter(
    conn: psycopg.Connection[Any], topic: str, payload: bytes, reason: str
) -> None:
    conn.execute(
        "INSERT INTO dead_letters (topic, payload, reason) VALUES (%s, %s, %s)",
        (topic, payload, reason),
    )


HealthRow = tuple[str, str, str | None, datetime, bool, str]


def upsert_device_health(conn: psycopg.Connection[Any], reports: Sequence[HealthRow]) -> None:
    """Keep the newest health per device; a late, older report changes nothing.

    Rows are (device, site, agent, reported_at, connected, health as JSON text). The
    device's `last_seen` moves forward too, when the device is a known one.
    """
    if not reports:
        return
    ordered = sorted(reports)  # one lock order for every worker: no deadlocks
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_health (device_id, site_id, agent_id, reported_at, connected, "
            "health) VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (device_id) DO UPDATE "
            "SET site_id = EXCLUDED.site_id, agent_id = EXCLUDED.agent_id, "
            "reported_at = EXCLUDED.reported_at, connected = EXCLUDED.connected, "
            "health = EXCLUDED.health WHERE device_health.reported_at <= EXCLUDED.reported_at",
            ordered,
        )
        cur.executemany(
            "UPDATE devices SET last_seen = %s WHERE device_id = %s "
            "AND (last_seen IS NULL OR last_seen < %s)",
            [(r[3], r[0], r[3]) for r in ordered],
        )


def upsert_agent_status(
    conn: psycopg.Connection[Any], statuses: Sequence[tuple[str, str, str, datetime, bool]]
) -> None:
    """Keep the newest state per agent; rows are (agent, site, state, since, since_known).

    A status without its own `since` (the Last Will, whose arrival time stands in)
    changes a row only when the state changes: the same retained Will seen again
    must not move `since`.
    """
    if not statuses:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO agent_status (agent_id, site_id, state, since) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (agent_id) DO UPDATE SET site_id = EXCLUDED.site_id, "
            "state = EXCLUDED.state, since = EXCLUDED.since "
            "WHERE agent_status.since <= EXCLUDED.since "
            "AND (%s OR agent_status.state <> EXCLUDED.state)",
            sorted(statuses),
        )


def batch_rows(batch: ScanBatch) -> tuple[list[tuple[object, ...]], set[date], datetime]:
    """Rows (SCAN_COPY_COLUMNS order) of a validated batch, the UTC days they need
    partitions for (every day from the oldest to the newest) and the newest time.

    The hot path: straight from the validated wire events, without building
    ScanEvent objects first (the same values as scan_row of each event the batch carries).
    """
    device, site = batch.device, batch.site
    # fmt: off
    rows: list[tuple[object, ...]] = [
        (e.ts, e.id, device, site, e.read_point, e.kind.value, e.tracking_id, e.code,
         e.symbology, e.epc, e.rssi, e.antenna, e.read_count, e.first_seen, e.last_seen,
         e.direction)
        for e in batch.events
    ]
    # fmt: on
    times = [e.ts for e in batch.events]
    first, last = min(times).astimezone(UTC).date(), max(times)
    days = {
        first + timedelta(days=n) for n in range((last.astimezone(UTC).date() - first).days + 1)
    }
    return rows, days, last

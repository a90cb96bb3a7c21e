"""Exactly-once writes of scan events: COPY into a staging table, then merge on the event id.

COPY cannot skip conflicting rows, so each batch is copied into a temporary
table and moved with INSERT ... ON CONFLICT DO NOTHING; the difference between
rows staged and rows inserted is the number of duplicates (replays, redeliveries).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from parceltrack.events import ScanEvent

log = logging.getLogger(__name__)

SCAN_COPY_COLUMNS = (
    "ts", "event_id", "device_id", "site_id", "read_point_id", "kind", "tracking_id",
    "code", "symbology", "epc", "rssi", "antenna", "read_count", "first_seen",
    "last_seen", "direction",
)  # fmt: skip
_COLS = ", ".join(SCAN_COPY_COLUMNS)


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


def write_scans(
    conn: psycopg.Connection[Any], events: Sequence[ScanEvent], partitions: ScanPartitions
) -> WriteResult:
    """Write events once each, inside the caller's transaction; report duplicates."""
    if not events:
        return WriteResult(0, 0)
    partitions.ensure(conn, {e.ts.astimezone(UTC).date() for e in events})
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS scans_stage "
        "(LIKE scans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur:
        with cur.copy(f"COPY scans_stage ({_COLS}) FROM STDIN") as copy:
            for e in events:
                copy.write_row(scan_row(e))
        cur.execute(
            f"INSERT INTO scans ({_COLS}) SELECT {_COLS} FROM scans_stage ON CONFLICT DO NOTHING"
        )
        written = cur.rowcount
    return WriteResult(staged=len(events), written=written)


def write_dead_letter(
    conn: psycopg.Connection[Any], topic: str, payload: bytes, reason: str
) -> None:
    conn.execute(
        "INSERT INTO dead_letters (topic, payload, reason) VALUES (%s, %s, %s)",
        (topic, payload, reason),
    )

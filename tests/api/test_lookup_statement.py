"""The lookup statement (api/queries.py): a header row, then the parcel's reads in order.

The view tests (test_lookup_equivalence.py) compare two readers of the same rows; these
check the rows themselves against the tables they come from.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api import queries
from tests.api.conftest import Seeded

UNKNOWN = "EE471108151FR"


async def _rows(dsn: str, sql: str, s10: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(sql, {"t": s10})
        return await cur.fetchall()


@pytest.mark.parametrize(
    "sql", [queries.LOOKUP, queries.LOOKUP_WITH_DETECTOR_ETA], ids=["own-eta", "detector-eta"]
)
def test_header_row_then_every_read_in_order(seeded: Seeded, sql: str) -> None:
    """The first row carries the manifest, alerts and standards with no scan; then come
    exactly the parcel's reads (no-reads left out) by time and event id, with no header
    columns repeated; a parcel with no reads, or none at all, yields the header alone."""
    header_columns = ("manifest_tracking_id", "service_class", "open_alert_kinds", "std_sites")
    with psycopg.connect(seeded.dsn) as conn:
        stored = {
            s10: [
                (ts, event_id)
                for ts, event_id in conn.execute(
                    "SELECT ts, event_id FROM scans WHERE tracking_id = %s AND kind <> 'noread' "
                    "ORDER BY ts, event_id",
                    (s10,),
                )
            ]
            for s10 in (seeded.dispatched, seeded.missorted, seeded.accepted)
        }
    assert stored[seeded.dispatched] and not stored[seeded.accepted]
    for s10, reads in stored.items():
        rows = asyncio.run(_rows(seeded.dsn, sql, s10))
        header, *scans = rows
        assert header["ts"] is None and header["event_id"] is None
        assert header["manifest_tracking_id"] == s10 and header["std_sites"]
        assert [(r["ts"], r["event_id"]) for r in scans] == reads
        assert all(r[c] is None for r in scans for c in header_columns)
        assert all(r["read_point_id"] and r["site_name"] for r in scans)
    missorted_header = asyncio.run(_rows(seeded.dsn, sql, seeded.missorted))[0]
    assert missorted_header["open_alert_kinds"]
    (unknown,) = asyncio.run(_rows(seeded.dsn, sql, UNKNOWN))
    assert unknown["manifest_tracking_id"] is None and unknown["ts"] is None

"""SQL of the API, parameterised, kept apart from HTTP handling."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

PARCEL = """
SELECT tracking_id, service_class, destination, origin_site, accepted_at
FROM parcels WHERE tracking_id = %s
"""

TIMELINE = """
SELECT s.ts, s.site_id, s.read_point_id, s.device_id, s.kind,
       rp.zone, rp.stage, rp.description
FROM scans s LEFT JOIN read_points rp USING (read_point_id)
WHERE s.tracking_id = %s
ORDER BY s.ts
"""


async def parcel(conn: AsyncConnection[Any], tracking_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PARCEL, (tracking_id,))
        return await cur.fetchone()


async def timeline(conn: AsyncConnection[Any], tracking_id: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(TIMELINE, (tracking_id,))
        return await cur.fetchall()

"""SQL of the parcel lookup, parameterised, kept apart from HTTP handling."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

PARCEL = """
SELECT p.tracking_id, p.service_class, p.destination, p.origin_site, p.accepted_at, p.epc,
       sc.delivery_days
FROM parcels p LEFT JOIN service_classes sc USING (service_class)
WHERE p.tracking_id = %s
"""

# Reads only: a no-read carries no tracking number.
TIMELINE = """
SELECT s.ts, s.event_id, s.site_id, s.read_point_id, s.device_id, s.kind,
       rp.zone, rp.stage, rp.description, rp.next_read_point_id,
       nrp.description AS next_description, st.name AS site_name
FROM scans s
LEFT JOIN read_points rp ON rp.read_point_id = s.read_point_id
LEFT JOIN read_points nrp ON nrp.read_point_id = rp.next_read_point_id
LEFT JOIN sites st ON st.site_id = s.site_id
WHERE s.tracking_id = %s AND s.kind <> 'noread'
ORDER BY s.ts, s.event_id
"""

OPEN_ALERT_KINDS = """
SELECT kind FROM alerts WHERE tracking_id = %s AND state <> 'resolved'
"""

STANDARDS = """
SELECT site_id, stage, max_seconds FROM stage_standards WHERE service_class = %s
"""


async def parcel(conn: AsyncConnection[Any], tracking_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PARCEL, (tracking_id,))
        return await cur.fetchone()


async def timeline(conn: AsyncConnection[Any], tracking_id: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(TIMELINE, (tracking_id,))
        return await cur.fetchall()


async def open_alert_kinds(conn: AsyncConnection[Any], tracking_id: str) -> list[str]:
    cur = await conn.execute(OPEN_ALERT_KINDS, (tracking_id,))
    return [str(kind) for (kind,) in await cur.fetchall()]


async def standards(
    conn: AsyncConnection[Any], service_class: str | None
) -> dict[tuple[str, str], float]:
    if service_class is None:
        return {}
    cur = await conn.execute(STANDARDS, (service_class,))
    return {(str(site), str(stage)): float(s) for site, stage, s in await cur.fetchall()}

"""SQL of the parcel lookup, parameterised, kept apart from HTTP handling.

One statement, one round trip: a header row carrying the manifest row, the kinds of
the parcel's open alerts and the stage standards of its service class, then the
parcel's reads in order (a parcel has a few dozen at most). A parcel with no reads
yields the header alone; the header's scan columns are NULL.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_SCAN_COLUMNS = (
    "ts", "event_id", "site_id", "read_point_id", "device_id", "kind", "zone", "stage",
    "description", "next_read_point_id", "next_description", "site_name",
)  # fmt: skip


def _lookup(detector_eta: bool) -> str:
    """The lookup statement: a header row (the manifest row, the open alert kinds, the
    stage standards and, with `detector_eta`, the detector's ETA), then one row per read.

    The header's columns are NULL on the reads' rows and the reads' columns NULL on
    the header, whose `ts` is NULL: it sorts first and no reader takes it for a read.
    Repeating the header on every read (as a join would) made PostgreSQL send, and
    the API parse, its four arrays and eight manifest columns once per read.
    """
    eta_join = "LEFT JOIN parcel_eta e ON e.tracking_id = %(t)s" if detector_eta else ""
    eta_column = "e.eta AS detector_eta," if detector_eta else ""
    eta_null = "NULL," if detector_eta else ""
    header_nulls = ", ".join(f"NULL AS {name}" for name in _SCAN_COLUMNS)
    return f"""
WITH p AS (
    SELECT p.tracking_id, p.service_class, p.destination, p.origin_site, p.accepted_at,
           p.epc, p.account, sc.delivery_days
    FROM parcels p LEFT JOIN service_classes sc USING (service_class)
    WHERE p.tracking_id = %(t)s
), a AS (
    SELECT array_agg(kind) AS open_alert_kinds FROM alerts
    WHERE tracking_id = %(t)s AND state <> 'resolved'
), sd AS (
    SELECT array_agg(site_id) AS std_sites, array_agg(stage) AS std_stages,
           array_agg(max_seconds) AS std_seconds
    FROM stage_standards WHERE service_class = (SELECT service_class FROM p)
)
SELECT p.tracking_id AS manifest_tracking_id, p.service_class, p.destination, p.origin_site,
       p.accepted_at, p.epc, p.account, p.delivery_days, a.open_alert_kinds,
       sd.std_sites, sd.std_stages, sd.std_seconds, {eta_column} {header_nulls}
FROM a CROSS JOIN sd LEFT JOIN p ON TRUE {eta_join}
UNION ALL
-- Reads only: a no-read carries no tracking number.
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, {eta_null}
       s.ts, s.event_id, s.site_id, s.read_point_id, s.device_id, s.kind,
       rp.zone, rp.stage, rp.description, rp.next_read_point_id,
       nrp.description AS next_description, st.name AS site_name
FROM scans s
LEFT JOIN read_points rp ON rp.read_point_id = s.read_point_id
LEFT JOIN read_points nrp ON nrp.read_point_id = rp.next_read_point_id
LEFT JOIN sites st ON st.site_id = s.site_id
WHERE s.tracking_id = %(t)s AND s.kind <> 'noread'
ORDER BY ts NULLS FIRST, event_id
"""


LOOKUP = _lookup(detector_eta=False)
# With the detection service's `parcel_eta` table (issue 6, migration 40): its
# expected time at the site's last stage. Chosen at start-up, when the table exists.
LOOKUP_WITH_DETECTOR_ETA = _lookup(detector_eta=True)

_MANIFEST = (
    "service_class", "destination", "origin_site", "accepted_at", "epc", "account",
    "delivery_days",
)  # fmt: skip


async def has_detector_eta(conn: AsyncConnection[Any]) -> bool:
    cur = await conn.execute("SELECT to_regclass('parcel_eta') IS NOT NULL")
    row = await cur.fetchone()
    return bool(row and row[0])


async def lookup(
    conn: AsyncConnection[Any], tracking_id: str, detector_eta: bool = False
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[str], dict[tuple[str, str], float]]:
    """The manifest row (or None, and with `detector_eta` the detector's ETA at the
    site's last stage under that key), the scans, the open alert kinds, the standards."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LOOKUP_WITH_DETECTOR_ETA if detector_eta else LOOKUP, {"t": tracking_id})
        rows = await cur.fetchall()
    first = rows[0]
    manifest = (
        {
            "tracking_id": first["manifest_tracking_id"],
            "detector_eta": first.get("detector_eta"),
            **{k: first[k] for k in _MANIFEST},
        }
        if first["manifest_tracking_id"] is not None
        else None
    )
    standards = {
        (str(site), str(stage)): float(seconds)
        for site, stage, seconds in zip(
            first["std_sites"] or [],
            first["std_stages"] or [],
            first["std_seconds"] or [],
            strict=True,
        )
    }
    scans = [r for r in rows if r["ts"] is not None]
    return manifest, scans, [str(k) for k in first["open_alert_kinds"] or []], standards

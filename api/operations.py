"""Controllers' view of the equipment: devices' health and throughput per read point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.alerts import AUTH, Controller, Name
from api.kpis import NO_UTC_OFFSET, PERIOD_TOO_LONG
from api.language import Problem
from api.models import Device, Throughput, ThroughputBucket
from parceltrack.i18n import N_

router = APIRouter(tags=["controllers"])

# A device is online when it reported health as connected, or scanned, within
# `offline_after` seconds; health counters come from the latest health message.
DEVICES = """
WITH recent AS (
    SELECT device_id,
           count(*) FILTER (WHERE kind <> 'noread') AS reads,
           count(*) FILTER (WHERE kind = 'noread') AS noreads,
           max(ts) AS last_scan
    FROM scans WHERE ts > now() - interval '1 hour'
    GROUP BY device_id
)
SELECT d.device_id, d.site_id, d.read_point_id, d.kind,
       greatest(d.last_seen, h.reported_at, r.last_scan) AS last_seen,
       coalesce(h.connected, false) AND h.reported_at > now() - make_interval(secs => %(off)s)
         OR r.last_scan > now() - make_interval(secs => %(off)s) AS online,
       coalesce(r.reads, 0) AS reads_last_hour, coalesce(r.noreads, 0) AS noreads_last_hour,
       (h.health->>'frames_bad')::bigint AS frames_bad,
       (h.health->>'reopens')::bigint AS reopens,
       (h.health->>'outbox_depth')::bigint AS outbox_depth,
       (h.health->>'outbox_oldest_s')::double precision AS outbox_oldest_s,
       h.agent_id, a.state AS agent_state
FROM devices d
LEFT JOIN device_health h ON h.device_id = d.device_id
LEFT JOIN agent_status a ON a.agent_id = h.agent_id
LEFT JOIN recent r ON r.device_id = d.device_id
WHERE %(site)s::text IS NULL OR d.site_id = %(site)s
ORDER BY d.site_id, d.device_id
"""

THROUGHPUT = """
SELECT read_point_id,
       date_bin(make_interval(secs => %(bucket)s), ts, TIMESTAMPTZ '2000-01-01') AS bucket_start,
       count(*) FILTER (WHERE kind <> 'noread') AS reads,
       count(*) FILTER (WHERE kind = 'noread') AS noreads
FROM scans
WHERE site_id = %(site)s AND ts >= %(since)s AND ts < %(until)s
GROUP BY 1, 2
ORDER BY 2, 1
"""


@router.get("/v1/devices", response_model=list[Device], responses=AUTH)
async def list_devices(request: Request, _who: Controller, site: Name = None) -> list[Device]:
    """Every device: online or not, last seen, reads and no-reads in the last hour,
    bad frames and reopens, and its edge agent's outbox depth."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    off = request.app.state.settings.offline_after_s
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(DEVICES, {"off": off, "site": site})
        rows = await cur.fetchall()
    return [Device(**{**r, "online": bool(r["online"])}) for r in rows]


@router.get(
    "/v1/sites/{site}/throughput",
    response_model=Throughput,
    responses={**AUTH, 404: {"description": "No such site"}},
)
async def site_throughput(
    request: Request,
    _who: Controller,
    site: Annotated[str, Path(max_length=200, pattern=r"^[^\x00]+$")],
    since: Annotated[datetime | None, Query(description="default: an hour ago")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    bucket: Annotated[int, Query(ge=10, le=86400, description="bucket width, seconds")] = 300,
) -> Throughput:
    """Reads and no-reads per read point per time bucket (date_bin over the scans)."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=1)
    if since.tzinfo is None or until.tzinfo is None:
        raise Problem(422, NO_UTC_OFFSET)
    if not since < until or until - since > timedelta(days=31):
        raise Problem(422, PERIOD_TOO_LONG, days=31)
    if (until - since).total_seconds() / bucket > 10_000:
        raise Problem(422, N_("more than {most} buckets; widen the bucket"), most=10_000)
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT 1 FROM sites WHERE site_id = %s", (site,))
        if await cur.fetchone() is None:
            raise Problem(404, N_("no such site"))
        await cur.execute(
            THROUGHPUT, {"bucket": bucket, "site": site, "since": since, "until": until}
        )
        rows = await cur.fetchall()
    return Throughput(
        site_id=site,
        bucket_seconds=bucket,
        since=since,
        until=until,
        buckets=[ThroughputBucket(**r) for r in rows],
    )

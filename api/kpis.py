"""Managers' scorecards per site, read point, stage, day and shift; JSON or CSV.

Definitions (documented in docs/api.md):
- on-time rate: of the parcels that left a site (first scan at a `dispatch` stage)
  or were delivered in the period, those that did so by their due time (acceptance
  + the service class's J+n working days);
- mis-sort rate: of the parcels read at a chute, those whose chute is not the one
  the sort plan in force at that moment assigns to their destination;
- no-read rate: no-reads / all scans;
- loss rate: of the parcels seen at a site, those with no dispatch scan there and
  no scan at all for `lost_after` seconds;
- dwell: from a parcel's read at a read point to its next read anywhere, per read
  point and per stage (where parcels wait);
- alerts opened / acknowledged / resolved counted when each happened; time to
  acknowledge for alerts opened in the period;
- complaints and time to first answer, by when the customer wrote.
Day and shift are the site's local ones (early 06-14, late 14-22, night 22-06).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.alerts import AUTH, Name
from api.language import Problem
from api.models import Kpis, ReadPointKpi, SiteKpi, StageKpi
from api.replica import read_with
from api.security import Caller, require
from parceltrack.i18n import N_
from parceltrack.layout import Stage

router = APIRouter(tags=["managers"])
Manager = Annotated[Caller, Depends(require("manager"))]
# Periods asked of the figures (here, the manager page and throughput): why one is refused.
NO_UTC_OFFSET = N_("since and until need a UTC offset")
PERIOD_TOO_LONG = N_("need since < until, at most {days} days apart")

_SCANS = """
WITH s AS (
    SELECT s.*, st.timezone AS tz FROM scans s JOIN sites st USING (site_id)
    WHERE s.ts >= %(since)s AND s.ts < %(until)s
      AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
)
"""

PARCELS = (
    _SCANS
    + """
, visits AS (
    SELECT s.site_id, s.tracking_id, min(s.tz) AS tz, min(s.ts) AS arrived, max(s.ts) AS last_ts,
           min(s.ts) FILTER (WHERE rp.stage = %(dispatch)s) AS dispatched,
           min(s.ts) FILTER (WHERE rp.stage = %(delivery)s) AS delivered
    FROM s JOIN read_points rp USING (read_point_id)
    WHERE s.tracking_id IS NOT NULL
    GROUP BY 1, 2
), chutes AS (
    SELECT DISTINCT ON (s.site_id, s.tracking_id) s.site_id, s.tracking_id,
           s.read_point_id AS chute,
           (SELECT e.chute_read_point_id FROM sort_plans sp
              JOIN sort_plan_entries e USING (sort_plan_id)
             WHERE sp.site_id = s.site_id AND sp.effective_from <= s.ts
               AND e.destination = p.destination
             ORDER BY sp.effective_from DESC, sp.version DESC LIMIT 1) AS planned
    FROM s JOIN read_points rp USING (read_point_id) JOIN parcels p USING (tracking_id)
    WHERE rp.stage = %(chute)s
    ORDER BY s.site_id, s.tracking_id, s.ts
)
SELECT v.site_id, shift_day(v.arrived, v.tz)::text AS day, shift_of(v.arrived, v.tz) AS shift,
       count(*) AS parcels_seen,
       count(*) FILTER (WHERE coalesce(v.delivered, v.dispatched)
                        <= add_working_days(p.accepted_at, sc.delivery_days)) AS on_time,
       count(*) FILTER (WHERE coalesce(v.delivered, v.dispatched) IS NOT NULL
                        AND sc.delivery_days IS NOT NULL) AS finished,
       count(*) FILTER (WHERE c.planned IS NOT NULL AND c.chute <> c.planned) AS missorted,
       count(*) FILTER (WHERE c.planned IS NOT NULL) AS chuted,
       count(*) FILTER (WHERE v.dispatched IS NULL AND v.delivered IS NULL
                        AND v.last_ts < now() - make_interval(secs => %(lost_after)s)) AS lost
FROM visits v
LEFT JOIN parcels p USING (tracking_id)
LEFT JOIN service_classes sc USING (service_class)
LEFT JOIN chutes c ON c.site_id = v.site_id AND c.tracking_id = v.tracking_id
GROUP BY 1, 2, 3
"""
)

# The stages PARCELS acts on, passed as its query parameters of the same names.
_PARCEL_STAGES = {
    stage.value: stage.value for stage in (Stage.DISPATCH, Stage.DELIVERY, Stage.CHUTE)
}

READ_POINTS = (
    _SCANS
    + """
, dwell AS (
    SELECT s.*, lead(s.ts) OVER (PARTITION BY s.tracking_id ORDER BY s.ts) - s.ts AS wait
    FROM s
)
SELECT d.site_id, d.read_point_id, rp.stage,
       shift_day(d.ts, d.tz)::text AS day, shift_of(d.ts, d.tz) AS shift,
       count(*) FILTER (WHERE d.kind <> 'noread') AS reads,
       count(*) FILTER (WHERE d.kind = 'noread') AS noreads,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.wait))
         FILTER (WHERE d.tracking_id IS NOT NULL) AS dwell_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM d.wait))
         FILTER (WHERE d.tracking_id IS NOT NULL) AS dwell_p95_s
FROM dwell d LEFT JOIN read_points rp USING (read_point_id)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 4, 5, 2
"""
)

STAGES = (
    _SCANS
    + """
, dwell AS (
    SELECT s.*, lead(s.ts) OVER (PARTITION BY s.tracking_id ORDER BY s.ts) - s.ts AS wait
    FROM s WHERE s.tracking_id IS NOT NULL
)
SELECT d.site_id, rp.stage, shift_day(d.ts, d.tz)::text AS day, shift_of(d.ts, d.tz) AS shift,
       count(DISTINCT d.tracking_id) AS parcels,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.wait)) AS dwell_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM d.wait)) AS dwell_p95_s
FROM dwell d JOIN read_points rp USING (read_point_id)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 3, 4, 2
"""
)

ALERTS = """
WITH a AS (
    SELECT a.*, coalesce(st.timezone, 'UTC') AS tz FROM alerts a
    LEFT JOIN sites st USING (site_id)
    WHERE a.site_id IS NOT NULL AND (%(site)s::text IS NULL OR a.site_id = %(site)s)
), happened AS (
    SELECT site_id, tz, opened_at AS at, 'opened' AS what,
           extract(epoch FROM acked_at - opened_at) AS to_ack FROM a
    UNION ALL SELECT site_id, tz, acked_at, 'acked', NULL FROM a WHERE acked_at IS NOT NULL
    UNION ALL SELECT site_id, tz, resolved_at, 'resolved', NULL FROM a
      WHERE resolved_at IS NOT NULL
)
SELECT site_id, shift_day(at, tz)::text AS day, shift_of(at, tz) AS shift,
       count(*) FILTER (WHERE what = 'opened') AS opened,
       count(*) FILTER (WHERE what = 'acked') AS acked,
       count(*) FILTER (WHERE what = 'resolved') AS resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_ack) AS to_ack_p50
FROM happened WHERE at >= %(since)s AND at < %(until)s
GROUP BY 1, 2, 3
"""

COMPLAINTS = """
SELECT f.site_id, shift_day(f.created_at, st.timezone)::text AS day,
       shift_of(f.created_at, st.timezone) AS shift, count(*) AS complaints,
       percentile_cont(0.5) WITHIN GROUP
         (ORDER BY extract(epoch FROM f.first_answer_at - f.created_at)) AS answer_p50
FROM feedback f JOIN sites st USING (site_id)
WHERE f.kind = 'complaint' AND f.created_at >= %(since)s AND f.created_at < %(until)s
  AND (%(site)s::text IS NULL OR f.site_id = %(site)s)
GROUP BY 1, 2, 3
"""


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def _rows(conn: AsyncConnection[Any], sql: str, params: dict[str, Any]) -> list[Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def compute(conn: AsyncConnection[Any], params: dict[str, Any]) -> Kpis:
    parcels = await _rows(conn, PARCELS, {**params, **_PARCEL_STAGES})
    points = await _rows(conn, READ_POINTS, params)
    stages = await _rows(conn, STAGES, params)
    alerts = await _rows(conn, ALERTS, params)
    complaints = await _rows(conn, COMPLAINTS, params)
    keys = sorted(
        {(r["site_id"], r["day"], r["shift"]) for r in (*parcels, *points, *alerts, *complaints)}
    )
    by = {name: {(r["site_id"], r["day"], r["shift"]): r for r in rows}
          for name, rows in (("p", parcels), ("a", alerts), ("c", complaints))}  # fmt: skip
    scans: dict[tuple[str, str, str], list[int]] = {}
    for r in points:
        tally = scans.setdefault((r["site_id"], r["day"], r["shift"]), [0, 0])
        tally[0] += r["reads"]
        tally[1] += r["noreads"]
    sites = []
    for key in keys:
        p, a, c = by["p"].get(key, {}), by["a"].get(key, {}), by["c"].get(key, {})
        reads, noreads = scans.get(key, [0, 0])
        sites.append(
            SiteKpi(
                site_id=key[0],
                day=key[1],
                shift=key[2],
                parcels_seen=p.get("parcels_seen", 0),
                on_time_rate=_rate(p.get("on_time", 0), p.get("finished", 0)),
                mis_sort_rate=_rate(p.get("missorted", 0), p.get("chuted", 0)),
                no_read_rate=_rate(noreads, reads + noreads),
                loss_rate=_rate(p.get("lost", 0), p.get("parcels_seen", 0)),
                alerts_opened=a.get("opened", 0),
                alerts_acknowledged=a.get("acked", 0),
                alerts_resolved=a.get("resolved", 0),
                time_to_ack_p50_s=a.get("to_ack_p50"),
                complaints=c.get("complaints", 0),
                time_to_first_answer_p50_s=c.get("answer_p50"),
            )
        )
    return Kpis(
        since=params["since"],
        until=params["until"],
        sites=sites,
        read_points=[
            ReadPointKpi(**r, no_read_rate=_rate(r["noreads"], r["reads"] + r["noreads"]))
            for r in points
        ],
        stages=[StageKpi(**r) for r in stages],
    )


def to_csv(rows: Sequence[BaseModel], model: type[BaseModel]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(model.model_fields), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.model_dump(mode="json"))
    return out.getvalue()


@router.get(
    "/v1/kpis",
    response_model=Kpis,
    responses={
        **AUTH,
        200: {
            "description": "Scorecards as JSON, or one table as CSV (format=csv or "
            "Accept: text/csv; `table` picks sites, read_points or stages)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
async def kpis(
    request: Request,
    _who: Manager,
    site: Name = None,
    since: Annotated[datetime | None, Query(description="default: 7 days ago")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    table: Annotated[Literal["sites", "read_points", "stages"], Query()] = "sites",
) -> Any:
    """Service quality per site, read point, stage, day and shift."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    if since.tzinfo is None or until.tzinfo is None:
        raise Problem(422, NO_UTC_OFFSET)
    if not since < until or until - since > timedelta(days=92):
        raise Problem(422, PERIOD_TOO_LONG, days=92)
    params = {
        "since": since,
        "until": until,
        "site": site,
        "lost_after": request.app.state.settings.lost_after_s,
    }
    result = await read_with(request, lambda read: compute(read.conn, params))
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if not wants_csv:
        return result
    chosen: dict[str, tuple[Sequence[BaseModel], type[BaseModel]]] = {
        "sites": (result.sites, SiteKpi),
        "read_points": (result.read_points, ReadPointKpi),
        "stages": (result.stages, StageKpi),
    }
    rows, model = chosen[table]
    return Response(
        to_csv(rows, model),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="kpis-{table}.csv"'},
    )

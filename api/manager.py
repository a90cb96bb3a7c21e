"""The manager page and its figures, and the control room's floor view.

`/manager` is served like the tracking page (no build, no CDN): its charts are
drawn by Apache ECharts vendored under api/static/vendor/echarts/ (version and
licence in docs/pages.md). The figures come from storage/figures.py, the same
as the daily report's, summed from hourly rollups (storage/rollup.py) that each
request first brings up to the last committed scan; each one as JSON or CSV. The floor view's data
(`/v1/floor`) is per read point: open alerts, parcels there now and how long
they have waited, and scans per minute over the last hour.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api import pages
from api.alerts import AUTH, Controller, Name
from api.kpis import NO_UTC_OFFSET, PERIOD_TOO_LONG
from api.language import Problem
from api.quality_texts import render, texts
from api.security import Caller, require
from parceltrack import i18n
from parceltrack.i18n import N_
from storage import figures, rollup

router = APIRouter()
Manager = Annotated[Caller, Depends(require("manager"))]
FigureName = Annotated[str, Path(pattern="^(" + "|".join(figures.names()) + ")$")]
MAX_PERIOD = timedelta(days=92)


class FigureOut(BaseModel):
    name: str
    columns: list[str]
    rows: list[list[Any]]


class FiguresOut(BaseModel):
    since: datetime
    until: datetime
    site: str | None
    computed_at: datetime | None = Field(
        default=None, description="when served as computed ahead: when it was computed"
    )
    summary: dict[str, float | int | None] = Field(
        description="at a glance: each rate over the period, overdue complaints, lowest uptime"
    )
    figures: list[FigureOut]


class FloorPoint(BaseModel):
    read_point_id: str
    stage: str
    zone: str
    description: str
    position: int
    open_alerts: int = Field(description="live alerts (open or acknowledged) at this read point")
    worst_severity: str | None
    parcels: int = Field(description="parcels whose last read is here (the detector's view)")
    longest_wait_s: float | None
    standard_s: float | None = Field(description="the longest stage standard of its stage")
    per_minute: list[int] = Field(description="scans per minute, the last 60 minutes, oldest first")


class FloorSite(BaseModel):
    site_id: str
    read_points: list[FloorPoint]


class Floor(BaseModel):
    at: datetime
    sites: list[FloorSite]


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


def period(
    since: datetime | None, until: datetime | None, site: str | None, lost: float
) -> figures.Period:
    """The period asked for (default: the 7 days before `until`, now), or 422 saying why."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    if since.tzinfo is None or until.tzinfo is None:
        raise Problem(422, NO_UTC_OFFSET)
    if not since < until or until - since > MAX_PERIOD:
        raise Problem(422, PERIOD_TOO_LONG, days=MAX_PERIOD.days)
    return figures.Period(since, until, site, lost)


Since = Annotated[datetime | None, Query(description="default: 7 days before until")]
Until = Annotated[datetime | None, Query(description="default: now")]


Days = Annotated[
    int | None,
    Query(ge=1, le=92, description="the last n days; 1, 7 and 30 for every site are "
          "served as computed ahead by `parceltrack quality` when fresh (see computed_at)"),
]  # fmt: skip


async def _found(
    request: Request, site: str | None, since: datetime | None, until: datetime | None,
    days: int | None, only: str | None = None,
) -> tuple[figures.Period, list[figures.Figure], datetime | None]:  # fmt: skip
    """The figures asked for: the snapshot of `days` when one is fresh, else computed now."""
    lost = request.app.state.settings.lost_after_s
    now = datetime.now(UTC)
    if days is not None:
        if since is not None or until is not None:
            raise Problem(422, N_("days: give days, or since and until"))
        since, until = now - timedelta(days=days), now
    chosen = period(since, until, site, lost)
    async with _pool(request).connection() as conn:
        if days in figures.SNAPSHOT_DAYS and site is None:
            stored = await figures.read_snapshot(conn, days, now)
            if stored is not None:
                body, computed_at = stored
                kept = figures.Period(
                    datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"])
                )
                return kept, figures.from_body(body), computed_at
        # The scans committed until now, rolled up (usually a few ms). One stepper at
        # a time: while `parceltrack quality` steps (or rebuilds), the rollups as they
        # stand answer, at most one of its ticks behind.
        await asyncio.to_thread(rollup.catch_up, request.app.state.settings.dsn, False)
        if only is not None:
            return chosen, [await figures.one_figure(conn, only, chosen)], None
        return chosen, await figures.all_figures(conn, chosen), None


@router.get("/v1/manager/figures", response_model=FiguresOut, responses=AUTH, tags=["managers"])
async def get_figures(
    request: Request,
    _who: Manager,
    site: Name = None,
    since: Since = None,
    until: Until = None,
    days: Days = None,
) -> FiguresOut:
    """Every figure of the manager page (on-time, rates, dwell, complaints, uptime)."""
    chosen, found, computed_at = await _found(request, site, since, until, days)
    return FiguresOut(
        since=chosen.since,
        until=chosen.until,
        site=site,
        computed_at=computed_at,
        summary=figures.summary(found),
        figures=[
            FigureOut(name=f.name, columns=list(f.columns), rows=jsonable_encoder(f.rows))
            for f in found
        ],
    )


def figure_csv(figure: figures.Figure) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(figure.columns)
    for row in figure.rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime) else v
                         for v in row])  # fmt: skip
    return out.getvalue()


@router.get(
    "/v1/manager/figures/{name}",
    response_model=FigureOut,
    tags=["managers"],
    responses={
        **AUTH,
        200: {
            "description": "One figure as JSON, or as CSV with format=csv or Accept: text/csv",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
async def get_figure(
    request: Request,
    _who: Manager,
    name: FigureName,
    site: Name = None,
    since: Since = None,
    until: Until = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    days: Days = None,
) -> Any:
    """One figure of the manager page: the table its chart draws."""
    _chosen, found, _at = await _found(request, site, since, until, days, only=name)
    figure = next(f for f in found if f.name == name)
    if format == "csv" or (format is None and "text/csv" in request.headers.get("accept", "")):
        return Response(
            figure_csv(figure),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return FigureOut(
        name=figure.name, columns=list(figure.columns), rows=jsonable_encoder(figure.rows)
    )


FLOOR = """
WITH points AS (
    SELECT site_id, read_point_id, stage, zone, description, position FROM read_points
    WHERE %(site)s::text IS NULL OR site_id = %(site)s
), live AS (
    SELECT a.read_point_id, count(*) AS n,
           max(CASE coalesce(own.severity, dflt.severity)
                 WHEN 'critical' THEN 3 WHEN 'major' THEN 2 ELSE 1 END) AS worst
    FROM alerts a
    LEFT JOIN alert_severities own ON own.site_id = a.site_id AND own.kind = a.kind
    LEFT JOIN alert_severities dflt ON dflt.site_id IS NULL AND dflt.kind = a.kind
    WHERE a.state <> 'resolved' AND a.read_point_id IS NOT NULL
    GROUP BY 1
), here AS (
    SELECT read_point_id, count(*) AS parcels,
           extract(epoch FROM now() - min(entered_at))::float8 AS longest
    FROM parcel_eta GROUP BY 1
), minutes AS (
    SELECT read_point_id, bucket, scans FROM scan_throughput_1m
    WHERE (%(site)s::text IS NULL OR site_id = %(site)s) AND bucket >= %(from)s
)
SELECT p.*, coalesce(l.n, 0) AS open_alerts, l.worst, coalesce(h.parcels, 0) AS parcels,
       h.longest AS longest_wait_s,
       (SELECT max(ss.max_seconds) FROM stage_standards ss
         WHERE ss.site_id = p.site_id AND ss.stage = p.stage) AS standard_s,
       (SELECT coalesce(array_agg(coalesce(m.scans, 0)::int ORDER BY g.b), '{}')
          FROM generate_series(%(from)s::timestamptz, %(from)s::timestamptz
                               + interval '59 minutes', interval '1 minute') AS g(b)
          LEFT JOIN minutes m ON m.read_point_id = p.read_point_id AND m.bucket = g.b)
         AS per_minute
FROM points p LEFT JOIN live l USING (read_point_id) LEFT JOIN here h USING (read_point_id)
ORDER BY p.site_id, p.position, p.read_point_id
"""
_SEVERITY = {1: "minor", 2: "major", 3: "critical"}


@router.get("/v1/floor", response_model=Floor, responses=AUTH, tags=["controllers"])
async def floor(request: Request, _who: Controller, site: Name = None) -> Floor:
    """Each site's read points for the floor view: alerts, waiting parcels, throughput."""
    now = datetime.now(UTC)
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(FLOOR, {"site": site, "from": first})
        rows = await cur.fetchall()
    sites: dict[str, list[FloorPoint]] = {}
    for r in rows:
        worst = _SEVERITY.get(r.pop("worst"))
        sites.setdefault(r.pop("site_id"), []).append(FloorPoint(**r, worst_severity=worst))
    return Floor(at=now, sites=[FloorSite(site_id=k, read_points=v) for k, v in sites.items()])


@cache
def _template() -> str:
    return (pages.STATIC / "manager.html").read_text(encoding="utf-8")


def _language(request: Request, lang: str | None) -> str:
    return i18n.choose(lang, request.headers.get("accept-language"))


@router.get("/manager", include_in_schema=False)
async def manager_page(request: Request, lang: str | None = None) -> HTMLResponse:
    """Managers: the centre's quality at a glance, with charts, tables and CSV."""
    return HTMLResponse(
        render(_template(), _language(request, lang)),
        headers={**pages.SECURITY_HEADERS, "Cache-Control": "no-cache", "Vary": "Accept-Language"},
    )


@router.get("/manager/texts", include_in_schema=False)
async def page_texts(request: Request, lang: str | None = None) -> JSONResponse:
    """The quality texts as JSON, for the floor view inside the control room."""
    language = _language(request, lang)
    return JSONResponse(
        {"lang": language, "texts": texts(language)},
        headers={**pages.SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )

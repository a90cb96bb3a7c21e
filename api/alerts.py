"""Controllers' alerts: list with filters and keyset pages, acknowledge, live stream,
and the label of every kind.

The stream is Server-Sent Events whose ids are `alert_events.event_id`: a client
reconnecting with `Last-Event-ID` gets every change after that id from the table,
then live changes as PostgreSQL NOTIFYs them on `parceltrack_alerts`. The NOTIFY
payload is only a wake-up: each wake-up reads all events after the last one sent,
so a lost or coalesced notification loses nothing. Comments (`: keep-alive`) go
out when idle so proxies do not cut the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.language import DOMAIN, Problem, declared_language, language
from api.models import Alert, AlertKindLabel, AlertPage
from api.security import Caller, require
from parceltrack.alerts import AlertKind
from parceltrack.i18n import N_, gettext_for

log = logging.getLogger(__name__)

router = APIRouter(tags=["controllers"])
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key's role may not do this"},
}
Controller = Annotated[Caller, Depends(require("controller"))]
ALERT_COLUMNS = (
    "alert_id, kind, state, site_id, read_point_id, device_id, tracking_id, opened_at, "
    "detectable_at, acked_at, acked_by, resolved_at, details, assigned_to"
)
Name = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
NO_SUCH_ALERT = N_("no such alert")

# What controllers read for each kind: the control room's headings and announcements,
# and the dashboards' series names (tests/unit/test_contracts.py holds them to these).
ALERT_LABELS: Mapping[AlertKind, str] = {
    AlertKind.DELAY: N_("Delayed at a stage"),
    AlertKind.MISSING: N_("Missing"),
    AlertKind.LATE: N_("Will miss its delivery standard"),
    AlertKind.MISSORT: N_("Mis-sorted"),
    AlertKind.MISROUTE: N_("Mis-routed"),
    AlertKind.SILENCE: N_("Device silent"),
    AlertKind.NOREAD: N_("No-read spike"),
}


@router.get("/v1/alerts", response_model=AlertPage, responses=AUTH)
async def list_alerts(
    request: Request,
    _who: Controller,
    site: Name = None,
    kind: Name = None,
    state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="opened at or after")] = None,
    until: Annotated[datetime | None, Query(description="opened before")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=2**62, description="cursor from the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertPage:
    """Alerts, newest first, filtered by site, kind, state and opening time."""
    conditions: list[str] = ["TRUE"]
    params: list[Any] = []
    for column, value in (("site_id", site), ("kind", kind), ("state", state)):
        if value is not None:
            conditions.append(f"{column} = %s")
            params.append(value)
    if since is not None:
        conditions.append("opened_at >= %s")
        params.append(since)
    if until is not None:
        conditions.append("opened_at < %s")
        params.append(until)
    if after is not None:
        conditions.append("alert_id < %s")
        params.append(after)
    # Only fixed column names are formatted in; every value is a parameter.
    sql = (
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(conditions)} "
        "ORDER BY alert_id DESC LIMIT %s"
    )
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, [*params, limit + 1])
        rows = await cur.fetchall()
    items = [Alert(**r) for r in rows[:limit]]
    return AlertPage(items=items, next_cursor=items[-1].alert_id if len(rows) > limit else None)


@router.get(
    "/v1/alerts/kinds",
    response_model=list[AlertKindLabel],
    responses=AUTH,
    dependencies=[Depends(declared_language)],
)
async def alert_kinds(request: Request, _who: Controller) -> list[AlertKindLabel]:
    """Every kind of alert detection raises, with the label controllers read (in the
    request's language; the dashboards use the English ones)."""
    say = gettext_for(DOMAIN, language(request)).gettext
    return [AlertKindLabel(kind=kind, label=say(ALERT_LABELS[kind])) for kind in AlertKind]


@router.post(
    "/v1/alerts/{alert_id}/ack",
    response_model=Alert,
    responses={**AUTH, 404: {"description": "No such alert"}},
)
async def ack_alert(
    request: Request, who: Controller, alert_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Alert:
    """Acknowledge an open alert as the caller; acknowledging again changes nothing."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"UPDATE alerts SET state = 'acknowledged', acked_at = now(), acked_by = %s "
            f"WHERE alert_id = %s AND state = 'open' RETURNING {ALERT_COLUMNS}",
            (who.name, alert_id),
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = %s", (alert_id,)
            )
            row = await cur.fetchone()
    if row is None:
        raise Problem(404, NO_SUCH_ALERT)
    return Alert(**row)


def sse(event_id: int, event: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def alert_events(dsn: str, last_id: int | None, keepalive_s: float) -> AsyncIterator[str]:
    """SSE frames: the backlog after `last_id` (or nothing, for a new client), then live."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("LISTEN parceltrack_alerts")
        if last_id is None:
            cur = await conn.execute("SELECT coalesce(max(event_id), 0) FROM alert_events")
            row = await cur.fetchone()
            last_id = int(row[0]) if row else 0
        yield "retry: 3000\n\n"
        while True:
            cur = await conn.execute(
                "SELECT event_id, change, alert FROM alert_events WHERE event_id > %s "
                "ORDER BY event_id LIMIT 1000",
                (last_id,),
            )
            rows = await cur.fetchall()
            for event_id, change, alert in rows:
                last_id = int(event_id)
                yield sse(last_id, f"alert.{change}", {"change": change, "alert": alert})
            if len(rows) == 1000:
                continue  # more backlog
            woken = False
            async for _notify in conn.notifies(timeout=keepalive_s, stop_after=1):
                woken = True
            if not woken:
                yield ": keep-alive\n\n"


@router.get(
    "/v1/alerts/stream",
    responses={
        **AUTH,
        200: {
            "description": "Server-Sent Events: `id` is the alert event id, `event` is "
            "alert.opened / alert.acknowledged / alert.resolved / alert.updated, `data` "
            "the alert as JSON. Reconnect with Last-Event-ID to receive what was missed.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def stream_alerts(
    request: Request,
    _who: Controller,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, pattern=r"^\d*$")
    ] = None,
) -> StreamingResponse:
    """Live alert changes as Server-Sent Events, with replay after Last-Event-ID."""
    last = int(last_event_id) if last_event_id else None
    settings = request.app.state.settings
    frames = alert_events(settings.dsn, last, settings.keepalive_s)
    return StreamingResponse(
        _until_cancelled(frames),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _until_cancelled(frames: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for frame in frames:
            yield frame
    except asyncio.CancelledError:
        log.debug("alert stream client went away")
        raise

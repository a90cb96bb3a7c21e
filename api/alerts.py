"""Controllers' alerts: list with filters and keyset pages, acknowledge, live stream,
and the label of every kind.

The stream is Server-Sent Events in commit order (api/alert_stream.py): its ids are
feed positions, so a client reconnecting with `Last-Event-ID` gets every change that
committed after it, however late a slow transaction committed, then live changes as
PostgreSQL NOTIFYs them on `parceltrack_alerts`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.alert_stream import alert_frames, current_position, resume_token
from api.language import DOMAIN, Problem, declared_language, language
from api.models import Alert, AlertKindLabel, AlertPage
from api.security import Caller, require
from parceltrack.alerts import AlertKind
from parceltrack.i18n import N_, gettext_for
from storage.feed import FeedPosition

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
BAD_LAST_EVENT_ID = N_(
    "Last-Event-ID: not an id this stream sends (a position xmin:xmax:in-flight, or an "
    "alert event id)"
)
LAST_EVENT_ID_AHEAD = N_(
    "Last-Event-ID: a position this database has not reached; reconnect without it"
)
# A position lists the transactions in flight when it was taken: room for hundreds.
MAX_LAST_EVENT_ID = 8000

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


@router.get(
    "/v1/alerts/stream",
    responses={
        **AUTH,
        200: {
            "description": "Server-Sent Events in commit order. `event` is alert.opened / "
            "alert.acknowledged / alert.resolved / alert.updated; `data` is JSON with "
            "`event_id`, `change` and `alert` (the alert as it was after the change). "
            "Changes go out in batches, each read in one database snapshot and in "
            "event_id order; only a batch's last frame has an `id`: the snapshot's "
            "position (`xmin:xmax:in-flight`, an opaque token). Reconnect with "
            "Last-Event-ID to get what committed after it: a client cut mid-batch gets "
            "the whole batch again, so drop repeats by `event_id`. A numeric "
            "Last-Event-ID (an alert event id, from before positions) is still taken: "
            "the changes with a greater event id committed by then, then positions.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        422: {"description": "Last-Event-ID is not an id this stream sends"},
    },
)
async def stream_alerts(
    request: Request,
    _who: Controller,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=MAX_LAST_EVENT_ID,
            description="the last `id` received: a position, or an alert event id",
        ),
    ] = None,
) -> StreamingResponse:
    """Live alert changes as Server-Sent Events, with replay after Last-Event-ID."""
    resume = await _resume(request, last_event_id) if last_event_id else None
    settings = request.app.state.settings
    frames = alert_frames(settings.dsn, resume, settings.keepalive_s)
    return StreamingResponse(
        _until_cancelled(frames),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _resume(request: Request, last_event_id: str) -> FeedPosition | int:
    """Where a reconnecting client resumes; a 422 naming the header otherwise."""
    try:
        resume = resume_token(last_event_id)
    except ValueError:
        raise Problem(422, BAD_LAST_EVENT_ID) from None
    if isinstance(resume, FeedPosition):
        # A position this database has not reached (a client of another database,
        # say one restored from a dump) would wait silently until it does.
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        async with pool.connection() as conn:
            now = await current_position(conn)
        if resume.xmax > now.xmax:
            raise Problem(422, LAST_EVENT_ID_AHEAD)
    return resume


async def _until_cancelled(frames: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for frame in frames:
            yield frame
    except asyncio.CancelledError:
        log.debug("alert stream client went away")
        raise

"""The built-in pages: customers' tracking page and the controllers' control room.

Plain HTML, CSS and JavaScript from api/static/, served by the API itself, so there
is no front-end build and no CDN: the pages call the same /v1/ endpoints as any
client. Every page is sent with a Content-Security-Policy that allows only this
origin's scripts and styles and no inline script, so text from the database
(customers' feedback, alert details) can never run as code even if a bug rendered
it as HTML; and with `Referrer-Policy: no-referrer`, so a tracking number in the
page's address does not leak to other sites.

Pages are sent in the reader's language (`?lang=`, then Accept-Language, then the
configured default), translated on the server with each site's time zone for the
scripts (api/page_texts.py).
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.language import language
from api.page_texts import render

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    """A page served as it is in api/static/ (one without text marks)."""
    # no-cache: a browser revalidates (ETag), so a new release is picked up at once.
    return FileResponse(
        STATIC / name,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


@cache  # read once per process: a changed page is served after a restart (a release)
def _source(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


async def site_zones(pool: AsyncConnectionPool[Any]) -> dict[str, str]:
    """Each site's time zone, for the pages' times; none when the database is away
    (the page then shows UTC, and says so, rather than failing)."""
    try:
        async with asyncio.timeout(2), pool.connection() as conn:
            cur = await conn.execute("SELECT site_id, timezone FROM sites")
            return {str(site): str(zone) for site, zone in await cur.fetchall()}
    except Exception:  # the page still works; the reason is logged
        log.warning("site time zones unavailable; pages show UTC", exc_info=True)
        return {}


async def _translated(request: Request, name: str) -> HTMLResponse:
    lang = language(request)
    body = render(_source(name), lang, await site_zones(request.app.state.pool))
    return HTMLResponse(
        body,
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": "no-cache",
            "Content-Language": lang,
            "Vary": "Accept-Language",
        },
    )


@router.get("/")
@router.get("/track")
async def tracking_page(request: Request) -> HTMLResponse:
    """Customers: a parcel's location, timeline and ETA by tracking number."""
    return await _translated(request, "track.html")


@router.get("/control-room")
async def control_room_page(request: Request) -> HTMLResponse:
    """Controllers: live open alerts, device health and feedback waiting for an answer."""
    return await _translated(request, "control-room.html")


class _StaticHeaders:
    """Adds the security headers and `no-cache` to the static files' responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for name, value in (*SECURITY_HEADERS.items(), ("Cache-Control", "no-cache")):
                    headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Serve the pages at /, /track and /control-room, and their files under /static/."""
    app.include_router(router)
    app.mount("/static", _StaticHeaders(StaticFiles(directory=STATIC)), name="static")

"""The live alert stream's frames, read from `alert_events` in commit order.

`event_id` is taken when a change is written, not when it commits: event 41 of a
slow transaction (a detection shard, an acknowledgement) can become visible after 42
was sent, and a stream resumed after 42 would skip it. So the stream's resume token
is a feed position (storage/feed.py, `FeedPosition.text()`: `xmin:xmax:in-flight`).
Each read takes the current snapshot's position and sends, in event_id order, the
changes committed between the last position and it; only the last frame of such a
batch carries `id:` (that position). A frame without `id` leaves the client's last
event id where it was (the SSE rules), so a client cut mid-batch resumes before the
batch and gets all of it again: at least once. Every frame's data carries its
`event_id`, by which clients drop repeats.

A numeric Last-Event-ID (a client from before positions) gets the changes with a
greater event id visible now, then follows by position.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from storage.feed import FeedPosition, committed_between, visible_at

_POSITION = re.compile(r"[0-9]{1,20}:[0-9]{1,20}:(?:[0-9]{1,20}(?:,[0-9]{1,20})*)?")
_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1
PAGE = 1000  # rows per query while sending a batch


def resume_token(value: str) -> FeedPosition | int:
    """A Last-Event-ID this stream sent: a position, or an event id from before
    positions. ValueError for anything else."""
    if _EVENT_ID.fullmatch(value) and int(value) <= _MAX_EVENT_ID:
        return int(value)
    if not _POSITION.fullmatch(value):
        raise ValueError("neither an event id nor a position")
    position = FeedPosition.parse(value)
    # What pg_current_snapshot() can give: xmin <= in-flight < xmax.
    if position.xmin > position.xmax or any(
        not position.xmin <= x < position.xmax for x in position.in_flight
    ):
        raise ValueError("not a snapshot")
    return position


async def current_position(conn: psycopg.AsyncConnection[Any]) -> FeedPosition:
    """The position of a snapshot taken now: every change it sees committed is
    visible to later statements, and the next position's read starts after it."""
    cur = await conn.execute("SELECT pg_current_snapshot()::text")
    row = await cur.fetchone()
    assert row is not None
    return FeedPosition.parse(str(row[0]))


def frame(event_id: int, change: str, alert: Any, position: FeedPosition | None) -> str:
    """One SSE frame; `id:` only on the last frame of a batch."""
    data = json.dumps({"event_id": event_id, "change": change, "alert": alert}, default=str)
    head = "" if position is None else f"id: {position.text()}\n"
    return f"{head}event: alert.{change}\ndata: {data}\n\n"


async def batch(
    conn: psycopg.AsyncConnection[Any],
    since: FeedPosition | int,
    now: FeedPosition,
) -> AsyncIterator[str]:
    """The frames of the changes committed after `since` (a position, or an event id:
    those after it) and visible at `now`, in event_id order, read a page at a time.
    The set is fixed once `now` is taken (later commits are not in it), so pages
    read in separate statements make one batch."""
    if isinstance(since, FeedPosition):
        where, params = committed_between("xact_id", since, now)
        after = 0
    else:
        where, params = visible_at("xact_id", now)
        after = since
    held: tuple[Any, ...] | None = None  # sent when the next row shows it is not last
    while True:
        cur = await conn.execute(
            f"SELECT event_id, change, alert FROM alert_events WHERE {where} "
            "AND event_id > %(after)s ORDER BY event_id LIMIT %(page)s",
            params | {"after": after, "page": PAGE},
        )
        rows = await cur.fetchall()
        for row in rows:
            if held is not None:
                yield frame(int(held[0]), str(held[1]), held[2], None)
            held = tuple(row)
        if len(rows) < PAGE:
            break
        after = int(rows[-1][0])
    if held is not None:
        yield frame(int(held[0]), str(held[1]), held[2], now)


async def alert_frames(
    dsn: str, resume: FeedPosition | int | None, keepalive_s: float
) -> AsyncIterator[str]:
    """SSE frames: what committed after `resume` (for a new client, nothing before
    now), then live changes as PostgreSQL NOTIFYs them. The NOTIFY payload is only a
    wake-up: each wake-up reads all that committed since, so a lost or coalesced
    notification loses nothing. Comments go out when idle so proxies keep the line."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # Listening before the first position: a commit after it wakes this stream.
        await conn.execute("LISTEN parceltrack_alerts")
        since = await current_position(conn) if resume is None else resume
        yield "retry: 3000\n\n"
        while True:
            now = await current_position(conn)
            async for text in batch(conn, since, now):
                yield text
            since = now
            woken = False
            async for _notify in conn.notifies(timeout=keepalive_s, stop_after=1):
                woken = True
            if not woken:
                yield ": keep-alive\n\n"

"""Controllers answer customers' feedback: list, take (first taker owns it), answer, close.

Taking is a conditional UPDATE (state 'open' -> 'taken'), so of two controllers
racing for one item exactly one wins; the other gets 409 naming the owner.
Time to first answer is `first_answer_at - created_at`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.alerts import AUTH, Controller, Name
from api.language import Problem
from api.models import AnswerIn, FeedbackAnswer, FeedbackItem, FeedbackPage
from parceltrack.i18n import N_

router = APIRouter(tags=["controllers"])
FeedbackId = Annotated[int, Path(ge=1, le=2**62)]
CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH,
    404: {"description": "No such feedback"},
    409: {"description": "Owned by another controller, or already closed"},
}
NO_SUCH_FEEDBACK = N_("no such feedback")
COLUMNS = (
    "feedback_id, tracking_id, kind, message, contact, site_id, state, owner, created_at, "
    "taken_at, first_answer_at, closed_at, snapshot, "
    "extract(epoch FROM first_answer_at - created_at)::float8 AS seconds_to_first_answer, "
    "staff_id, counter_id, deadline, "
    "(first_answer_at IS NULL AND deadline IS NOT NULL AND deadline < now()) AS overdue"
)


async def _items(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> list[FeedbackItem]:
    ids = [r["feedback_id"] for r in rows]
    answers: dict[int, list[FeedbackAnswer]] = {i: [] for i in ids}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT feedback_id, author, at, message FROM feedback_answers "
            "WHERE feedback_id = ANY(%s) ORDER BY at, answer_id",
            (ids,),
        )
        for a in await cur.fetchall():
            answers[a.pop("feedback_id")].append(FeedbackAnswer(**a))
    return [FeedbackItem(**r, answers=answers[r["feedback_id"]]) for r in rows]


async def _one(conn: AsyncConnection[Any], feedback_id: int) -> FeedbackItem:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {COLUMNS} FROM feedback WHERE feedback_id = %s", (feedback_id,))
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, NO_SUCH_FEEDBACK)
    return (await _items(conn, [row]))[0]


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


@router.get("/v1/feedback", response_model=FeedbackPage, responses=AUTH)
async def list_feedback(
    request: Request,
    _who: Controller,
    state: Annotated[Literal["open", "taken", "closed"] | None, Query()] = None,
    site: Name = None,
    owner: Name = None,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    overdue: Annotated[
        bool, Query(description="only complaints unanswered past their deadline")
    ] = False,
    staff: Name = None,
) -> FeedbackPage:
    """Customers' feedback, newest first; `state=open` is the queue still to take,
    `overdue=true` the complaints past their deadline without an answer."""
    sql = (
        f"SELECT {COLUMNS} FROM feedback WHERE (%(state)s::text IS NULL OR state = %(state)s) "
        "AND (NOT %(overdue)s OR (kind = 'complaint' AND first_answer_at IS NULL "
        "AND deadline < now())) "
        "AND (%(staff)s::text IS NULL OR staff_id = %(staff)s) "
        "AND (%(site)s::text IS NULL OR site_id = %(site)s) "
        "AND (%(owner)s::text IS NULL OR owner = %(owner)s) "
        "AND (%(after)s::bigint IS NULL OR feedback_id < %(after)s) "
        "ORDER BY feedback_id DESC LIMIT %(limit)s"
    )
    params = {
        "state": state,
        "site": site,
        "owner": owner,
        "after": after,
        "limit": limit + 1,
        "overdue": overdue,
        "staff": staff,
    }
    async with _pool(request).connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        items = await _items(conn, rows[:limit])
    return FeedbackPage(
        items=items, next_cursor=items[-1].feedback_id if len(rows) > limit else None
    )


@router.get(
    "/v1/feedback/{feedback_id}",
    response_model=FeedbackItem,
    responses={**AUTH, 404: {"description": "No such feedback"}},
)
async def get_feedback(request: Request, _who: Controller, feedback_id: FeedbackId) -> FeedbackItem:
    """One feedback item with the parcel's telemetry snapshot and the answers so far."""
    async with _pool(request).connection() as conn:
        return await _one(conn, feedback_id)


@router.post(
    "/v1/feedback/{feedback_id}/take", response_model=FeedbackItem, responses=CHANGE_RESPONSES
)
async def take_feedback(request: Request, who: Controller, feedback_id: FeedbackId) -> FeedbackItem:
    """Take an open item: the caller owns it until it is closed. Taking one's own is harmless."""
    async with _pool(request).connection() as conn:
        await conn.execute(
            "UPDATE feedback SET state = 'taken', owner = %s, taken_at = now() "
            "WHERE feedback_id = %s AND state = 'open'",
            (who.name, feedback_id),
        )
        item = await _one(conn, feedback_id)
    if item.owner != who.name:
        raise Problem(409, N_("owned by {owner}"), owner=item.owner)
    if item.state == "closed":
        raise Problem(409, N_("already closed"))
    return item


async def _owned(conn: AsyncConnection[Any], feedback_id: int, owner: str) -> None:
    cur = await conn.execute(
        "SELECT state, owner FROM feedback WHERE feedback_id = %s FOR UPDATE", (feedback_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise Problem(404, NO_SUCH_FEEDBACK)
    state, current = row
    if state != "taken" or current != owner:
        if state == "open":
            raise Problem(409, N_("take it first"))
        raise Problem(409, N_("{state}, owned by {owner}"), state=state, owner=current)


@router.post(
    "/v1/feedback/{feedback_id}/answers",
    response_model=FeedbackItem,
    status_code=201,
    responses=CHANGE_RESPONSES,
)
async def answer_feedback(
    request: Request, who: Controller, feedback_id: FeedbackId, answer: AnswerIn
) -> FeedbackItem:
    """Answer the customer; only the owner may. The first answer stops the clock."""
    async with _pool(request).connection() as conn:
        async with conn.transaction():
            await _owned(conn, feedback_id, who.name)
            await conn.execute(
                "INSERT INTO feedback_answers (feedback_id, author, message) VALUES (%s, %s, %s)",
                (feedback_id, who.name, answer.message),
            )
            await conn.execute(
                "UPDATE feedback SET first_answer_at = coalesce(first_answer_at, now()) "
                "WHERE feedback_id = %s",
                (feedback_id,),
            )
        return await _one(conn, feedback_id)


@router.post(
    "/v1/feedback/{feedback_id}/close", response_model=FeedbackItem, responses=CHANGE_RESPONSES
)
async def close_feedback(
    request: Request, who: Controller, feedback_id: FeedbackId
) -> FeedbackItem:
    """Close an item the caller owns."""
    async with _pool(request).connection() as conn:
        async with conn.transaction():
            await _owned(conn, feedback_id, who.name)
            await conn.execute(
                "UPDATE feedback SET state = 'closed', closed_at = now() WHERE feedback_id = %s",
                (feedback_id,),
            )
        return await _one(conn, feedback_id)

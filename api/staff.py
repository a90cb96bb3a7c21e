"""Counter staff and their rating from customers' feedback; complaint deadlines.

A customer's praise or complaint may name a staff member (`staff_id`) and a
counter. The rating is computed from that feedback on every read, with the rules
of parceltrack/rating.py, so it can never drift from the feedback behind it.
A complaint's deadline is set when it is written: its site's `answer_within`
(7 days where the site has no policy).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.alerts import AUTH, Name
from api.language import Problem
from api.models import FeedbackIn, ParcelView, Text
from api.security import Caller, require
from parceltrack import rating
from parceltrack.i18n import N_

router = APIRouter(tags=["managers"])
Manager = Annotated[Caller, Depends(require("manager"))]
StaffId = Annotated[str, Path(max_length=200, pattern=r"^[^\x00-\x1f/]+$")]
SiteId = Annotated[str, Path(max_length=200, pattern=r"^[^\x00-\x1f/]+$")]
DEFAULT_ANSWER_WITHIN = timedelta(days=7)

FEEDBACK_INSERT = """
INSERT INTO feedback (tracking_id, kind, message, contact, snapshot, site_id, staff_id,
                      counter_id, deadline)
VALUES (%(tracking_id)s, %(kind)s, %(message)s, %(contact)s, %(snapshot)s, %(site)s,
        %(staff_id)s, %(counter_id)s,
        CASE WHEN %(kind)s = 'complaint' THEN now() + coalesce(
            (SELECT answer_within FROM complaint_policies WHERE site_id = %(site)s),
            %(default_within)s) END)
RETURNING feedback_id, created_at, deadline
"""


def feedback_row(
    tracking_id: str, feedback: FeedbackIn, view: ParcelView, site: str | None
) -> dict[str, Any]:
    """The parameters of FEEDBACK_INSERT for a customer's feedback about a parcel."""
    return {
        "tracking_id": tracking_id,
        "kind": feedback.kind,
        "message": feedback.message,
        "contact": feedback.contact,
        "snapshot": Jsonb(view.model_dump(mode="json")),
        "site": site,
        "staff_id": feedback.staff_id,
        "counter_id": feedback.counter_id,
        "default_within": DEFAULT_ANSWER_WITHIN,
    }


async def named_staff_or_422(conn: AsyncConnection[Any], staff_id: str | None) -> None:
    if staff_id is None:
        return
    cur = await conn.execute("SELECT 1 FROM staff WHERE staff_id = %s", (staff_id,))
    if await cur.fetchone() is None:
        raise Problem(422, N_("staff_id: no staff member {staff_id!r}"), staff_id=staff_id)


class StaffIn(BaseModel):
    name: str = Text
    site_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    counter_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")


class StaffRating(BaseModel):
    staff_id: str
    name: str
    site_id: str | None
    counter_id: str | None
    score: int = Field(description="100 to start, +10 per praise, -20 per complaint")
    stars: int = Field(description="0 under 100 points, 1 from 100, 2 from 200")
    bonus_factor: float = Field(description="times the base bonus: score / 100, at least 0")
    needs_review: bool = Field(description="under 60 points")
    praise: int
    complaints: int


class RatingChange(BaseModel):
    at: datetime
    kind: str
    feedback_id: int
    change: int
    score: int
    stars: int
    bonus_factor: float
    needs_review: bool


class StaffHistory(BaseModel):
    staff: StaffRating
    history: list[RatingChange] = Field(description="each piece of feedback, oldest first")


class ComplaintPolicy(BaseModel):
    answer_within_s: float = Field(gt=0, le=366 * 86400, description="seconds to answer")


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


_STAFF = """
SELECT s.staff_id, s.name, s.site_id, s.counter_id,
       coalesce(array_agg(f.created_at ORDER BY f.created_at, f.feedback_id)
                FILTER (WHERE f.feedback_id IS NOT NULL), '{}') AS ats,
       coalesce(array_agg(f.kind ORDER BY f.created_at, f.feedback_id)
                FILTER (WHERE f.feedback_id IS NOT NULL), '{}') AS kinds,
       coalesce(array_agg(f.feedback_id ORDER BY f.created_at, f.feedback_id)
                FILTER (WHERE f.feedback_id IS NOT NULL), '{}') AS ids
FROM staff s LEFT JOIN feedback f USING (staff_id)
WHERE (%(staff)s::text IS NULL OR s.staff_id = %(staff)s)
  AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
GROUP BY s.staff_id ORDER BY s.staff_id
"""


def _rated(row: dict[str, Any]) -> tuple[StaffRating, list[rating.RatingStep]]:
    steps = rating.history(zip(row["ats"], row["kinds"], row["ids"], strict=True))
    now = steps[-1].rating if steps else rating.rating(rating.START)
    return (
        StaffRating(
            staff_id=row["staff_id"],
            name=row["name"],
            site_id=row["site_id"],
            counter_id=row["counter_id"],
            score=now.score,
            stars=now.stars,
            bonus_factor=now.bonus_factor,
            needs_review=now.needs_review,
            praise=row["kinds"].count("praise"),
            complaints=row["kinds"].count("complaint"),
        ),
        steps,
    )


async def staff_ratings(
    conn: AsyncConnection[Any], staff: str | None = None, site: str | None = None
) -> list[tuple[StaffRating, list[rating.RatingStep]]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STAFF, {"staff": staff, "site": site})
        return [_rated(r) for r in await cur.fetchall()]


@router.get("/v1/staff", response_model=list[StaffRating], responses=AUTH)
async def list_staff(
    request: Request,
    _who: Manager,
    site: Name = None,
) -> list[StaffRating]:
    """Every counter staff member with score, stars, bonus factor and review flag."""
    async with _pool(request).connection() as conn:
        return [r for r, _steps in await staff_ratings(conn, site=site)]


@router.get(
    "/v1/staff/{staff_id}",
    response_model=StaffHistory,
    responses={**AUTH, 404: {"description": "No such staff member"}},
)
async def staff_history(request: Request, _who: Manager, staff_id: StaffId) -> StaffHistory:
    """One staff member's rating and the feedback behind it, step by step."""
    async with _pool(request).connection() as conn:
        found = await staff_ratings(conn, staff=staff_id)
    if not found:
        raise Problem(404, N_("no staff member {staff_id!r}"), staff_id=staff_id)
    current, steps = found[0]
    return StaffHistory(
        staff=current,
        history=[
            RatingChange(
                at=s.at,
                kind=s.kind,
                feedback_id=s.feedback_id,
                change=s.change,
                score=s.rating.score,
                stars=s.rating.stars,
                bonus_factor=s.rating.bonus_factor,
                needs_review=s.rating.needs_review,
            )
            for s in steps
        ],
    )


@router.put(
    "/v1/staff/{staff_id}",
    response_model=StaffRating,
    responses={**AUTH, 409: {"description": "No such site"}},
)
async def put_staff(
    request: Request, _who: Manager, staff_id: StaffId, body: StaffIn
) -> StaffRating:
    """Register or update a staff member customers can name in their feedback."""
    async with _pool(request).connection() as conn:
        await conn.execute(
            "INSERT INTO staff (staff_id, name, site_id, counter_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (staff_id) DO UPDATE SET name = EXCLUDED.name, "
            "site_id = EXCLUDED.site_id, counter_id = EXCLUDED.counter_id",
            (staff_id, body.name, body.site_id, body.counter_id),
        )
        return (await staff_ratings(conn, staff=staff_id))[0][0]


@router.put(
    "/v1/sites/{site_id}/complaint-policy",
    response_model=ComplaintPolicy,
    responses={**AUTH, 409: {"description": "No such site"}},
)
async def put_complaint_policy(
    request: Request, _who: Manager, site_id: SiteId, body: ComplaintPolicy
) -> ComplaintPolicy:
    """How long the site has to answer a complaint; applies to complaints written from now."""
    async with _pool(request).connection() as conn:
        await conn.execute(
            "INSERT INTO complaint_policies (site_id, answer_within) VALUES (%s, %s) "
            "ON CONFLICT (site_id) DO UPDATE SET answer_within = EXCLUDED.answer_within",
            (site_id, timedelta(seconds=body.answer_within_s)),
        )
    return body

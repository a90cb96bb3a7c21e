"""Customer subscriptions to a parcel's notifications, unsubscribing, and the
delivery engine's dead letters for administrators.

Subscribing is public like the lookup (the full tracking number is the secret a
customer holds) and rate-limited. A webhook subscription gets a signing secret,
shown once in the answer; every message it receives is signed with it (docs/api.md).
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, model_validator

from api.alerts import AUTH
from api.customers import NOT_FOUND, RESPONSES, TrackingId, s10_or_422
from api.language import Problem
from api.security import Caller, rate_limited, require
from api.unsubscribe_texts import DOMAIN, DONE, TITLE
from parceltrack.i18n import CHINESE, ENGLISH, N_, choose, gettext_for
from parceltrack.webhooks import ParcelEvent
from storage import outbound

EVENTS = [event.value for event in ParcelEvent]

router = APIRouter(tags=["customers"], dependencies=[Depends(rate_limited)])
admin_router = APIRouter(tags=["administration"])
Admin = Annotated[Caller, Depends(require("admin"))]

# An address as mail systems take it: one @, no spaces or controls, a dot in the domain.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"


class SubscriptionIn(BaseModel):
    """Exactly one of `email` and `webhook_url`; `language` defaults to ?lang= /
    Accept-Language."""

    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)
    webhook_url: str | None = Field(
        default=None, max_length=2000, pattern=r"^https?://[^\s\x00-\x1f]+$"
    )
    language: Literal["en", "zh-CN"] | None = None

    @model_validator(mode="after")
    def one_target(self) -> SubscriptionIn:
        if (self.email is None) == (self.webhook_url is None):
            # A message id: the validation handler says it in the caller's language.
            raise ValueError(N_("give exactly one of email and webhook_url"))
        return self


class SubscriptionOut(BaseModel):
    subscription_id: int
    tracking_id: str
    channel: Literal["email", "webhook"]
    language: str
    events: list[str]
    created_at: datetime
    unsubscribe_url: str
    secret: str | None = Field(
        description="webhooks only: the HMAC-SHA256 key of X-Parceltrack-Signature, shown once"
    )


class Unsubscribed(BaseModel):
    tracking_id: str
    unsubscribed: bool = Field(description="false when it had already been ended")
    cancelled: int = Field(description="messages still queued that will not be sent")


class DeadLetter(BaseModel):
    delivery_id: int
    channel: str
    target: str
    subscriber: str
    idempotency_key: str
    kind: str
    attempts: int
    created_at: datetime
    retry_from: datetime
    dead_at: datetime | None
    last_error: str | None


class Replayed(BaseModel):
    delivery_id: int
    state: Literal["pending"]


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


@router.post(
    "/v1/parcels/{tracking_id}/subscriptions",
    response_model=SubscriptionOut,
    status_code=201,
    responses={**RESPONSES, 409: {"description": "This target already follows the parcel"}},
)
async def subscribe(
    request: Request,
    tracking_id: TrackingId,
    wish: SubscriptionIn,
    lang: Annotated[str | None, Query(max_length=35)] = None,
) -> SubscriptionOut:
    """Be told of the parcel's events by e-mail or webhook, in English or Chinese."""
    s10 = s10_or_422(tracking_id)
    language = wish.language or choose(lang, request.headers.get("accept-language"))
    channel: Literal["email", "webhook"] = "email" if wish.email else "webhook"
    target = wish.email or wish.webhook_url
    secret = "whsec_" + secrets.token_urlsafe(32) if channel == "webhook" else None
    token = secrets.token_urlsafe(24)
    async with _pool(request).connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT 1 FROM parcels WHERE tracking_id = %s", (s10,))
        if await cur.fetchone() is None:
            raise Problem(404, NOT_FOUND)
        cur = await conn.execute(
            "INSERT INTO customer_subscriptions (tracking_id, channel, target, language, "
            "secret, unsubscribe_token) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tracking_id, channel, target) WHERE unsubscribed_at IS NULL "
            "DO NOTHING RETURNING subscription_id, created_at",
            (s10, channel, target, language, secret, token),
        )
        row = await cur.fetchone()
    if row is None:
        raise Problem(
            409, N_("this {channel} target already follows {s10}"), channel=channel, s10=s10
        )
    return SubscriptionOut(
        subscription_id=row[0],
        tracking_id=s10,
        channel=channel,
        language=language,
        events=EVENTS,
        created_at=row[1],
        unsubscribe_url=str(request.url_for("unsubscribe_page", token=token)),
        secret=secret,
    )


Token = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


async def _unsubscribe(request: Request, token: str) -> tuple[Unsubscribed, str]:
    async with _pool(request).connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT subscription_id, tracking_id, language, unsubscribed_at IS NULL "
            "FROM customer_subscriptions WHERE unsubscribe_token = %s FOR UPDATE",
            (token,),
        )
        row = await cur.fetchone()
        if row is None:
            raise Problem(404, N_("no subscription with that link"))
        cancelled = 0
        if row[3]:
            await conn.execute(
                "UPDATE customer_subscriptions SET unsubscribed_at = now() "
                "WHERE subscription_id = %s",
                (row[0],),
            )
            cancelled = await outbound.cancel_pending(conn, f"subscription:{row[0]}")
    return Unsubscribed(tracking_id=row[1], unsubscribed=row[3], cancelled=cancelled), row[2]


@router.get(
    "/v1/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown link"}},
)
async def unsubscribe_page(request: Request, token: Token) -> HTMLResponse:
    """The link in every e-mail: ends the subscription and says so in its language."""
    done, language = await _unsubscribe(request, token)
    _ = gettext_for(DOMAIN, language).gettext
    lang = CHINESE if language == CHINESE else ENGLISH
    said = html.escape(_(DONE).format(tracking_id=done.tracking_id))
    title = html.escape(_(TITLE))
    return HTMLResponse(
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}'
        f"</title></head><body><h1>{title}</h1><p>{said}</p></body></html>"
    )


@router.post(
    "/v1/unsubscribe/{token}",
    response_model=Unsubscribed,
    responses={404: {"description": "Unknown link"}},
)
async def unsubscribe(request: Request, token: Token) -> Unsubscribed:
    """One-click unsubscribe (RFC 8058 List-Unsubscribe-Post) and API clients."""
    done, _language = await _unsubscribe(request, token)
    return done


@admin_router.get("/v1/admin/deliveries/dead", response_model=list[DeadLetter], responses=AUTH)
async def list_dead_letters(
    request: Request,
    _who: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    subscriber: Annotated[str | None, Query(max_length=200)] = None,
) -> list[DeadLetter]:
    """Messages given up after the retry window, newest first."""
    async with _pool(request).connection() as conn:
        rows = await outbound.dead_letters(conn, limit, subscriber)
    return [DeadLetter(**row) for row in rows]


@admin_router.post(
    "/v1/admin/deliveries/{delivery_id}/replay",
    response_model=Replayed,
    responses={
        **AUTH,
        404: {"description": "No such delivery"},
        409: {"description": "Not a dead letter"},
    },
)
async def replay_dead_letter(
    request: Request, _who: Admin, delivery_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Replayed:
    """Send a dead letter again, with a fresh retry window."""
    async with _pool(request).connection() as conn, conn.transaction():
        state = await outbound.replay(conn, delivery_id)
    if state is None:
        raise Problem(404, N_("no delivery {delivery_id}"), delivery_id=delivery_id)
    if state != "dead":
        raise Problem(
            409,
            N_("delivery {delivery_id} is {state}, not a dead letter"),
            delivery_id=delivery_id,
            state=state,
        )
    return Replayed(delivery_id=delivery_id, state="pending")

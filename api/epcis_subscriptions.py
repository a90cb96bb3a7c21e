"""EPCIS webhook subscriptions to a named query: `POST /epcis/queries/{name}/
subscriptions` (streaming only, signed with the subscriber's `signatureToken`), list
and delete. api/epcis_feed.py queues the deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from psycopg.rows import dict_row

from api import epcis_feed
from api.epcis import epcis_time
from api.epcis_http import (
    AUTH,
    NAMED,
    QUERY_NAME,
    VERSION_HEADERS,
    EpcisProblem,
    Reader,
    definition,
    invalid,
    json_body,
    no_such,
    owner,
    pool,
    problem,
)
from parceltrack.i18n import N_

router = APIRouter(tags=["EPCIS"], prefix="/epcis")
NO_SUBSCRIPTION = N_("no subscription {subscription_id!r}")

# -- subscriptions ----------------------------------------------------------------------

_SUBSCRIPTION_IN = {
    "type": "object",
    "required": ["dest", "signatureToken", "stream"],
    "properties": {
        "dest": {"type": "string", "format": "uri"},
        "signatureToken": {"type": "string"},
        "stream": {"type": "boolean"},
        "initialRecordTime": {"type": "string", "format": "date-time"},
    },
}
_SUBSCRIPTION = {
    "type": "object",
    "required": ["subscriptionID", "dest", "createdAt", "stream"],
    "properties": {
        "subscriptionID": {"type": "string"},
        "dest": {"type": "string"},
        "createdAt": {"type": "string", "format": "date-time"},
        "lastNotifiedAt": {"type": ["string", "null"]},
        "initialRecordTime": {"type": "string", "format": "date-time"},
        "stream": {"type": "boolean"},
    },
}
SUBSCRIPTION_FIELDS = ("dest", "signatureToken", "stream", "initialRecordTime", "schedule",
                       "reportIfEmpty")  # fmt: skip


def check_dest(dest: Any) -> str:
    """A webhook URL: http or https, with a host, at most 2000 characters."""
    if not isinstance(dest, str) or len(dest) > 2000:
        raise invalid("dest", N_("an http(s) URL of at most {most} characters"), most=2000)
    try:
        parts = urlsplit(dest)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise invalid("dest", N_("an http(s) URL with a host, such as https://example.com/epcis"))
    return dest


def _subscription_settings(body: Mapping[str, Any]) -> tuple[str, str, datetime | None]:
    if unknown := set(body) - set(SUBSCRIPTION_FIELDS):
        raise invalid(sorted(unknown)[0][:60], N_("not a field of a subscription"))
    dest = check_dest(body.get("dest"))
    if "schedule" in body or body.get("stream") is not True:
        raise EpcisProblem(
            400, "SubscriptionControlsException", N_("Subscription error"),
            N_("set it to true; scheduled subscriptions are not offered here"), field="stream",
        )  # fmt: skip
    token = body.get("signatureToken")
    # Optional in the binding; required here, as every delivery is signed with it.
    if not isinstance(token, str) or not 16 <= len(token) <= 500:
        raise invalid("signatureToken", N_("a secret of 16 to 500 characters, to sign deliveries"))
    initial = body.get("initialRecordTime")
    when = None
    if initial is not None:
        try:
            when = datetime.fromisoformat(initial) if isinstance(initial, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise invalid("initialRecordTime", N_("a date-time with a UTC offset"))
    return dest, token, when


def _subscription_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "subscriptionID": str(row["subscription_id"]),
        "dest": row["dest"],
        "createdAt": epcis_time(row["created_at"]),
        "lastNotifiedAt": epcis_time(row["last_notified_at"]) if row["last_notified_at"] else None,
        "initialRecordTime": epcis_time(row["initial_record_time"]),
        "stream": True,
    }


# lastNotifiedAt: when the receiver last accepted a delivery, as the engine recorded it.
_SUBSCRIPTION_COLUMNS = (
    "subscription_id, dest, created_at, initial_record_time, "
    "(SELECT max(d.delivered_at) FROM outbound_deliveries d "
    f"WHERE d.subscriber = '{epcis_feed.SUBSCRIBER_PREFIX}' || subscription_id "
    "AND d.state = 'delivered') AS last_notified_at"
)


@router.post(
    "/queries/{name}/subscriptions",
    status_code=201,
    responses={
        **NAMED,
        201: {"description": "Subscribed; Location names the subscription", "content": {
            "application/json": {"schema": _SUBSCRIPTION}}},
        400: problem("A field is wrong; detail names it"),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _SUBSCRIPTION_IN}}}},
)  # fmt: skip
async def subscribe(request: Request, who: Reader, name: str) -> JSONResponse:
    """Have every new event of the named query POSTed to `dest` as an
    EPCISQueryDocument (`stream: true`), signed with `signatureToken` in the
    `GS1-Signature` header; from `initialRecordTime` when given, else from now."""
    body = await json_body(request)
    dest, token, initial = _subscription_settings(body)
    subscription_id = uuid.uuid4()
    async with pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await definition(conn, who, name)
        await cur.execute(
            "INSERT INTO epcis_subscriptions (subscription_id, owner, query_name, dest, "
            "signature_token, initial_record_time, cursor_ingested) "
            "VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now())) "
            "RETURNING " + _SUBSCRIPTION_COLUMNS,
            (subscription_id, owner(who), name, dest, token, initial, initial),
        )
        row = await cur.fetchone()
    assert row is not None
    location = f"/epcis/queries/{quote(name)}/subscriptions/{subscription_id}"
    return JSONResponse(
        _subscription_view(row), status_code=201, headers={**VERSION_HEADERS, "Location": location}
    )


@router.get(
    "/queries/{name}/subscriptions",
    responses={**NAMED, 200: {"description": "The named query's subscriptions", "content": {
        "application/json": {"schema": {"type": "array", "items": _SUBSCRIPTION}}}}},
)  # fmt: skip
async def list_subscriptions(request: Request, who: Reader, name: str) -> JSONResponse:
    """The subscriptions to a named query (their secrets are never shown)."""
    async with pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await definition(conn, who, name)
        await cur.execute(
            "SELECT " + _SUBSCRIPTION_COLUMNS + " FROM epcis_subscriptions "
            "WHERE owner = %s AND query_name = %s ORDER BY created_at, subscription_id",
            (owner(who), name),
        )
        rows = await cur.fetchall()
    return JSONResponse([_subscription_view(r) for r in rows], headers=VERSION_HEADERS)


def _subscription_id(name: str, subscription_id: str) -> uuid.UUID:
    """The id in the path; 404 for one that could never have been given."""
    try:
        if QUERY_NAME.match(name):
            return uuid.UUID(subscription_id)
    except ValueError:
        pass
    raise no_such(NO_SUBSCRIPTION, subscription_id=subscription_id[:60])


_ONE = {**AUTH, 404: problem("No such subscription (for this caller)")}


@router.get(
    "/queries/{name}/subscriptions/{subscription_id}",
    responses={**_ONE, 200: {"description": "The subscription (never its secret)",
               "content": {"application/json": {"schema": _SUBSCRIPTION}}}},
)  # fmt: skip
async def get_subscription(
    request: Request, who: Reader, name: str, subscription_id: str
) -> JSONResponse:
    """One subscription, where its Location header points."""
    sid = _subscription_id(name, subscription_id)
    async with pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT " + _SUBSCRIPTION_COLUMNS + " FROM epcis_subscriptions "
            "WHERE owner = %s AND query_name = %s AND subscription_id = %s",
            (owner(who), name, sid),
        )
        row = await cur.fetchone()
    if row is None:
        raise no_such(NO_SUBSCRIPTION, subscription_id=subscription_id[:60])
    return JSONResponse(_subscription_view(row), headers=VERSION_HEADERS)


@router.delete("/queries/{name}/subscriptions/{subscription_id}", status_code=204, responses=_ONE)
async def unsubscribe(request: Request, who: Reader, name: str, subscription_id: str) -> Response:
    """End a subscription."""
    sid = _subscription_id(name, subscription_id)
    async with pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM epcis_subscriptions WHERE owner = %s AND query_name = %s "
            "AND subscription_id = %s",
            (owner(who), name, sid),
        )
    if cur.rowcount == 0:
        raise no_such(NO_SUBSCRIPTION, subscription_id=subscription_id[:60])
    return Response(status_code=204)

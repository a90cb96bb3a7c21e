"""The EPCIS 2.0 query interface (GS1's REST binding, the parts that fit) under /epcis/.

`GET /epcis/events` runs the simple event query given in URL parameters
(api/epcis_query.py); named queries (`POST /epcis/queries`, `GET
/epcis/queries/{name}/events`) keep a definition under a name; webhook subscriptions
to a named query (`POST /epcis/queries/{name}/subscriptions`) are delivered by
api/epcis_feed.py. Results are EPCISQueryDocuments, paged with `perPage` and
`nextPageToken` (the next page's URL in the `Link` header, `rel="next"`).

Who: a partner key (only its own account's parcels; its named queries and
subscriptions are its own) or a controller, manager or admin key (every parcel; the
staff share one set of named queries). Errors are RFC 7807 problem details with the
binding's exception types, the `detail` naming the parameter or field at fault.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api import epcis_feed
from api.epcis import epcis_time, event_of, query_document
from api.epcis_query import (
    PAGING_PARAMETERS,
    EventQuery,
    Position,
    QueryParameterError,
    events_sql,
    from_definition,
    page_token,
    parse,
    per_page,
    read_token,
)
from api.security import Caller, RateLimiter, caller

router = APIRouter(tags=["EPCIS"], prefix="/epcis")
VERSION_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
SIMPLE_EVENT_QUERY = "SimpleEventQuery"
QUERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_BODY = 64 * 1024
STAFF = ""  # the owner of the staff's named queries (a partner's is its account)


class EpcisProblem(Exception):
    """An error answered as RFC 7807 problem details, typed as the binding types it."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "type": f"epcisException:{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        return JSONResponse(
            body,
            status_code=self.status,
            media_type="application/problem+json",
            headers={**headers, **self.headers},
        )


def _bad_parameter(exc: QueryParameterError) -> EpcisProblem:
    return EpcisProblem(400, "QueryParameterException", "Invalid query parameter", str(exc))


def _invalid(detail: str) -> EpcisProblem:
    return EpcisProblem(400, "ValidationException", "Invalid request body", detail)


def _no_such(what: str) -> EpcisProblem:
    return EpcisProblem(404, "NoSuchNameException", "Resource not found", what)


async def reader(request: Request) -> Caller:
    """A partner key, or a controller's or above; problem details otherwise."""
    try:
        who = await caller(request)
    except HTTPException as exc:
        raise EpcisProblem(401, "SecurityException", "Unauthorised request", exc.detail) from exc
    if who is None:
        raise EpcisProblem(
            401,
            "SecurityException",
            "Unauthorised request",
            "this needs an API key: a partner's, or a controller's or above",
        )
    if not (who.may("partner") or who.may("controller")):
        raise EpcisProblem(
            403,
            "SecurityException",
            "Access to resource forbidden",
            f"role {who.role} may not query EPCIS events; needs partner or controller",
        )
    # A partner's system may loop over queries: one bucket per key, as for lookups.
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.wait_for(f"key:{who.key_id}")
    if wait > 0:
        raise EpcisProblem(
            429,
            "TooManyRequestsException",
            "Too many requests",
            "too many requests for this key; slow down",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return who


Reader = Annotated[Caller, Depends(reader)]


def _owner(who: Caller) -> str:
    return who.scope if who.scope is not None else STAFF


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


def _multi(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    return params


async def _page(
    request: Request, who: Caller, name: str, query: EventQuery, paging: Mapping[str, Sequence[str]]
) -> Response:
    try:
        limit = per_page(paging.get("perPage", ()))
        after = read_token(paging.get("nextPageToken", ()), query)
    except QueryParameterError as exc:
        raise _bad_parameter(exc) from exc
    rows: list[dict[str, Any]] = []
    if not query.nothing:
        sql, params = events_sql(query, who.scope, limit + 1, after)
        async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.encode(), params)
            rows = await cur.fetchall()
    headers = dict(VERSION_HEADERS)
    if len(rows) > limit:
        rows = rows[:limit]
        token = page_token(Position(rows[-1]["ts"], rows[-1]["event_id"]), query)
        following = request.url.include_query_params(nextPageToken=token)
        headers["Link"] = f'<{following}>; rel="next"'
    body = query_document(name, [event_of(r) for r in rows], datetime.now(UTC))
    return JSONResponse(body, headers=headers)


# -- OpenAPI: the binding's parameters and responses, for clients and schemathesis ----

_LIST = {"type": "array", "minItems": 1, "items": {"type": "string"}}
_PARAMETERS: list[dict[str, Any]] = [
    {"in": "query", "name": "perPage", "schema": {"type": "integer", "minimum": 1,
     "maximum": 1000, "default": 30}, "description": "events per page (at most 1000)"},
    {"in": "query", "name": "nextPageToken", "schema": {"type": "string"},
     "description": "the token of the `Link` header's next page"},
]  # fmt: skip
_QUERY_PARAMETERS: list[dict[str, Any]] = [
    {"in": "query", "name": "eventType", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "ObjectEvent (parcels' reads are ObjectEvents)"},
    {"in": "query", "name": "GE_eventTime", "schema": {"type": "string", "format": "date-time"}},
    {"in": "query", "name": "LT_eventTime", "schema": {"type": "string", "format": "date-time"}},
    {"in": "query", "name": "MATCH_epc", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "urn:epc:id:... or urn:parceltrack:s10:<S10>; exact"},
    {"in": "query", "name": "EQ_bizStep", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "arriving, departing, accepting, or "
     "urn:parceltrack:bizstep:sorting"},
    {"in": "query", "name": "EQ_bizLocation", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "urn:parceltrack:site:<site>"},
    {"in": "query", "name": "EQ_readPoint", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "urn:parceltrack:rp:<read point>"},
    {"in": "query", "name": "EQ_action", "style": "pipeDelimited", "explode": False,
     "schema": _LIST, "description": "OBSERVE (every read is an observation)"},
]  # fmt: skip


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {
                    "type": "object",
                    "required": ["type", "title"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                }
            }
        },
    }


_DOCUMENT = {
    "description": "An EPCISQueryDocument (GS1 EPCIS 2.0 JSON); the next page's URL is "
    'in the Link header (rel="next")',
    "content": {"application/json": {"schema": {"type": "object"}}},
}
Responses = dict[int | str, dict[str, Any]]
AUTH: Responses = {
    401: _problem("No API key, or an unknown one"),
    403: _problem("Not a partner or staff"),
    429: _problem("Too many requests for this key; see Retry-After"),
}
QUERYING: Responses = {
    **AUTH,
    200: _DOCUMENT,
    400: _problem("A query parameter is wrong; detail names it"),
}
_DEFINITION_SCHEMA = {
    "type": "object",
    "required": ["name", "query"],
    "properties": {"name": {"type": "string"}, "query": {"type": "object"}},
}


@router.get(
    "/events",
    responses=QUERYING,
    openapi_extra={"parameters": [*_PARAMETERS, *_QUERY_PARAMETERS]},
)
async def get_events(request: Request, who: Reader) -> Response:
    """EPCIS events of parcels' reads, filtered by the query parameters (a partner's
    key: only its own parcels), oldest first, a page at a time."""
    params = _multi(request)
    paging = {n: params.pop(n) for n in PAGING_PARAMETERS if n in params}
    try:
        query = parse(params)
    except QueryParameterError as exc:
        raise _bad_parameter(exc) from exc
    return await _page(request, who, SIMPLE_EVENT_QUERY, query, paging)


async def _json_body(request: Request) -> dict[str, Any]:
    import json

    body = await request.body()
    if len(body) > MAX_BODY:
        raise _invalid(f"body: over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("body: not JSON") from None
    if not isinstance(data, dict):
        raise _invalid("body: must be a JSON object")
    return data


async def _definition(conn: AsyncConnection[Any], who: Caller, name: str) -> Any:
    if not QUERY_NAME.match(name):  # could never have been stored
        raise _no_such(f"no named query {name[:100]!r}")
    cur = await conn.execute(
        "SELECT query FROM epcis_queries WHERE owner = %s AND name = %s", (_owner(who), name)
    )
    row = await cur.fetchone()
    if row is None:
        raise _no_such(f"no named query {name[:100]!r}")
    return row[0]


@router.post(
    "/queries",
    status_code=201,
    responses={
        **AUTH,
        201: {"description": "Created; Location names it", "content": {"application/json": {
            "schema": _DEFINITION_SCHEMA}}},
        400: _problem("The name or a query parameter is wrong; detail names it"),
        409: _problem("A named query of that name exists"),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _DEFINITION_SCHEMA}}}},
)  # fmt: skip
async def create_query(request: Request, who: Reader) -> JSONResponse:
    """Keep a query under a name: `{"name": ..., "query": {"EQ_bizStep": [...], ...}}`.
    A partner's query sees only its own parcels, whoever defined it."""
    body = await _json_body(request)
    if unknown := set(body) - {"name", "query"}:
        raise _invalid(f"{sorted(unknown)[0][:60]}: not a field of a named query")
    name = body.get("name")
    if not isinstance(name, str) or not QUERY_NAME.match(name):
        raise _invalid(
            "name: 1-100 letters, digits, '_', '.' or '-', starting with one of the first two"
        )
    try:
        from_definition(body.get("query"))  # checked; stored in the caller's own words
    except QueryParameterError as exc:
        raise EpcisProblem(
            400, "QueryValidationException", "Invalid query", f"query.{exc}"
        ) from exc
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "INSERT INTO epcis_queries (owner, name, query, created_by) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (_owner(who), name, Jsonb(body["query"]), who.name),
        )
    if cur.rowcount == 0:
        raise EpcisProblem(
            409, "ResourceAlreadyExistsException", "Resource already exists",
            f"a named query {name!r} exists",
        )  # fmt: skip
    return JSONResponse(
        {"name": name, "query": body["query"]},
        status_code=201,
        headers={**VERSION_HEADERS, "Location": f"/epcis/queries/{quote(name)}"},
    )


@router.get(
    "/queries",
    responses={**AUTH, 200: {"description": "The caller's named queries", "content": {
        "application/json": {"schema": {"type": "array", "items": _DEFINITION_SCHEMA}}}}},
)  # fmt: skip
async def list_queries(request: Request, who: Reader) -> JSONResponse:
    """The named queries this caller may run (a partner's own, or the staff's)."""
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "SELECT name, query FROM epcis_queries WHERE owner = %s ORDER BY name", (_owner(who),)
        )
        rows = await cur.fetchall()
    return JSONResponse([{"name": n, "query": q} for n, q in rows], headers=VERSION_HEADERS)


_NAMED: Responses = {**AUTH, 404: _problem("No named query of that name (for this caller)")}


@router.get(
    "/queries/{name}",
    responses={**_NAMED, 200: {"description": "The definition", "content": {
        "application/json": {"schema": _DEFINITION_SCHEMA}}}},
)  # fmt: skip
async def get_query(request: Request, who: Reader, name: str) -> JSONResponse:
    """A named query's definition."""
    async with _pool(request).connection() as conn:
        query = await _definition(conn, who, name)
    return JSONResponse({"name": name, "query": query}, headers=VERSION_HEADERS)


@router.delete("/queries/{name}", status_code=204, responses=_NAMED)
async def delete_query(request: Request, who: Reader, name: str) -> Response:
    """Forget a named query, and end its subscriptions."""
    if not QUERY_NAME.match(name):
        raise _no_such(f"no named query {name[:100]!r}")
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM epcis_queries WHERE owner = %s AND name = %s", (_owner(who), name)
        )
    if cur.rowcount == 0:
        raise _no_such(f"no named query {name[:100]!r}")
    return Response(status_code=204)


@router.get(
    "/queries/{name}/events",
    responses={**QUERYING, 404: _NAMED[404]},
    openapi_extra={"parameters": _PARAMETERS},
)
async def get_query_events(request: Request, who: Reader, name: str) -> Response:
    """The events of a named query (a partner's key: only its own parcels), a page at
    a time."""
    params = _multi(request)
    if unknown := set(params) - set(PAGING_PARAMETERS):
        raise _bad_parameter(
            QueryParameterError(
                sorted(unknown)[0][:60], "a named query takes only perPage and nextPageToken"
            )
        )
    async with _pool(request).connection() as conn:
        definition = await _definition(conn, who, name)
    query = from_definition(definition)  # checked when it was stored
    return await _page(request, who, name, query, params)


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
        raise _invalid("dest: an http(s) URL of at most 2000 characters")
    try:
        parts = urlsplit(dest)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise _invalid("dest: an http(s) URL with a host, such as https://example.com/epcis")
    return dest


def _subscription_settings(body: Mapping[str, Any]) -> tuple[str, str, datetime | None]:
    if unknown := set(body) - set(SUBSCRIPTION_FIELDS):
        raise _invalid(f"{sorted(unknown)[0][:60]}: not a field of a subscription")
    dest = check_dest(body.get("dest"))
    if "schedule" in body or body.get("stream") is not True:
        raise EpcisProblem(
            400, "SubscriptionControlsException", "Subscription error",
            "stream: set it to true; scheduled subscriptions are not offered here",
        )  # fmt: skip
    token = body.get("signatureToken")
    # Optional in the binding; required here, as every delivery is signed with it.
    if not isinstance(token, str) or not 16 <= len(token) <= 500:
        raise _invalid("signatureToken: a secret of 16 to 500 characters, to sign deliveries")
    initial = body.get("initialRecordTime")
    when = None
    if initial is not None:
        try:
            when = datetime.fromisoformat(initial) if isinstance(initial, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise _invalid("initialRecordTime: a date-time with a UTC offset")
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
        **_NAMED,
        201: {"description": "Subscribed; Location names the subscription", "content": {
            "application/json": {"schema": _SUBSCRIPTION}}},
        400: _problem("A field is wrong; detail names it"),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _SUBSCRIPTION_IN}}}},
)  # fmt: skip
async def subscribe(request: Request, who: Reader, name: str) -> JSONResponse:
    """Have every new event of the named query POSTed to `dest` as an
    EPCISQueryDocument (`stream: true`), signed with `signatureToken` in the
    `GS1-Signature` header; from `initialRecordTime` when given, else from now."""
    body = await _json_body(request)
    dest, token, initial = _subscription_settings(body)
    subscription_id = uuid.uuid4()
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await _definition(conn, who, name)
        await cur.execute(
            "INSERT INTO epcis_subscriptions (subscription_id, owner, query_name, dest, "
            "signature_token, initial_record_time, cursor_ingested) "
            "VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now())) "
            "RETURNING " + _SUBSCRIPTION_COLUMNS,
            (subscription_id, _owner(who), name, dest, token, initial, initial),
        )
        row = await cur.fetchone()
    assert row is not None
    location = f"/epcis/queries/{quote(name)}/subscriptions/{subscription_id}"
    return JSONResponse(
        _subscription_view(row), status_code=201, headers={**VERSION_HEADERS, "Location": location}
    )


@router.get(
    "/queries/{name}/subscriptions",
    responses={**_NAMED, 200: {"description": "The named query's subscriptions", "content": {
        "application/json": {"schema": {"type": "array", "items": _SUBSCRIPTION}}}}},
)  # fmt: skip
async def list_subscriptions(request: Request, who: Reader, name: str) -> JSONResponse:
    """The subscriptions to a named query (their secrets are never shown)."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await _definition(conn, who, name)
        await cur.execute(
            "SELECT " + _SUBSCRIPTION_COLUMNS + " FROM epcis_subscriptions "
            "WHERE owner = %s AND query_name = %s ORDER BY created_at, subscription_id",
            (_owner(who), name),
        )
        rows = await cur.fetchall()
    return JSONResponse([_subscription_view(r) for r in rows], headers=VERSION_HEADERS)


@router.delete(
    "/queries/{name}/subscriptions/{subscription_id}",
    status_code=204,
    responses={**AUTH, 404: _problem("No such subscription (for this caller)")},
)
async def unsubscribe(request: Request, who: Reader, name: str, subscription_id: str) -> Response:
    """End a subscription."""
    try:
        sid = uuid.UUID(subscription_id)
        if not QUERY_NAME.match(name):
            raise ValueError(name)
    except ValueError:
        raise _no_such(f"no subscription {subscription_id[:60]!r}") from None
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM epcis_subscriptions WHERE owner = %s AND query_name = %s "
            "AND subscription_id = %s",
            (_owner(who), name, sid),
        )
    if cur.rowcount == 0:
        raise _no_such(f"no subscription {subscription_id[:60]!r}")
    return Response(status_code=204)


def install(app: FastAPI) -> None:
    """Mount the EPCIS interface, answer its errors as problem details, and feed its
    subscriptions to the delivery engine while the app runs."""

    async def problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EpcisProblem)
        return exc.response()

    app.include_router(router)
    app.add_exception_handler(EpcisProblem, problem)
    epcis_feed.install(app)

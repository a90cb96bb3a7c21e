"""The EPCIS 2.0 query interface (GS1's REST binding, the parts that fit) under /epcis/.

`GET /epcis/events` runs the simple event query given in URL parameters
(api/epcis_query.py); named queries (`POST /epcis/queries`, `GET
/epcis/queries/{name}/events`) keep a definition under a name. Webhook subscriptions
to a named query are api/epcis_subscriptions.py's, delivered by api/epcis_feed.py.
Results are EPCISQueryDocuments, paged with `perPage` and `nextPageToken` (the next
page's URL in the `Link` header, `rel="next"`).

Who: a partner key (only its own account's parcels; its named queries and
subscriptions are its own) or a controller, manager or admin key (every parcel; the
staff share one set of named queries). Errors are RFC 7807 problem details with the
binding's exception types, the `detail` naming the parameter or field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api import epcis_feed, epcis_subscriptions
from api.epcis import event_of, query_document
from api.epcis_http import (
    AUTH,
    NAMED,
    NO_NAMED_QUERY,
    QUERY_NAME,
    VERSION_HEADERS,
    EpcisProblem,
    Reader,
    Responses,
    bad_parameter,
    check_accept,
    definition,
    invalid,
    json_body,
    no_such,
    owner,
    pool,
    problem,
)
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
from api.language import language
from api.security import Caller
from parceltrack.i18n import N_

router = APIRouter(tags=["EPCIS"], prefix="/epcis")
SIMPLE_EVENT_QUERY = "SimpleEventQuery"
LANGUAGE_PARAMETER = "lang"


def _multi(request: Request) -> dict[str, list[str]]:
    """The query's parameters; `lang` is not one of them: it only chooses the language
    of problem details (api/language.py reads it)."""
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name != LANGUAGE_PARAMETER:
            params.setdefault(name, []).append(value)
    return params


async def _page(
    request: Request, who: Caller, name: str, query: EventQuery, paging: Mapping[str, Sequence[str]]
) -> Response:
    check_accept(request)
    try:
        limit = per_page(paging.get("perPage", ()))
        after = read_token(paging.get("nextPageToken", ()), query)
    except QueryParameterError as exc:
        raise bad_parameter(exc) from exc
    rows: list[dict[str, Any]] = []
    if not query.nothing:
        sql, params = events_sql(query, who.scope, limit + 1, after)
        async with pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
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
    {"in": "query", "name": LANGUAGE_PARAMETER, "schema": {"type": "string", "maxLength": 35},
     "description": "language of problem details' title and detail: en or zh-CN (else "
     "Accept-Language, else the configured default); not a query condition"},
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


_DOCUMENT = {
    "description": "An EPCISQueryDocument (GS1 EPCIS 2.0 JSON); the next page's URL is "
    'in the Link header (rel="next")',
    "content": {"application/json": {"schema": {"type": "object"}}},
}
QUERYING: Responses = {
    **AUTH,
    200: _DOCUMENT,
    400: problem("A query parameter is wrong; detail names it"),
    406: problem("The Accept header rules out JSON"),
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
        raise bad_parameter(exc) from exc
    return await _page(request, who, SIMPLE_EVENT_QUERY, query, paging)


@router.post(
    "/queries",
    status_code=201,
    responses={
        **AUTH,
        201: {"description": "Created; Location names it", "content": {"application/json": {
            "schema": _DEFINITION_SCHEMA}}},
        400: problem("The name or a query parameter is wrong; detail names it"),
        409: problem("A named query of that name exists"),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _DEFINITION_SCHEMA}}}},
)  # fmt: skip
async def create_query(request: Request, who: Reader) -> JSONResponse:
    """Keep a query under a name: `{"name": ..., "query": {"EQ_bizStep": [...], ...}}`.
    A partner's query sees only its own parcels, whoever defined it."""
    body = await json_body(request)
    if unknown := set(body) - {"name", "query"}:
        raise invalid(sorted(unknown)[0][:60], N_("not a field of a named query"))
    name = body.get("name")
    if not isinstance(name, str) or not QUERY_NAME.match(name):
        raise invalid(
            "name", N_("1-100 letters, digits, '_', '.' or '-', starting with one of the first two")
        )
    try:
        from_definition(body.get("query"))  # checked; stored in the caller's own words
    except QueryParameterError as exc:
        raise EpcisProblem(
            400,
            "QueryValidationException",
            N_("Invalid query"),
            exc.problem,
            field=f"query.{exc.name}",
            params=exc.params,
        ) from exc
    async with pool(request).connection() as conn:
        cur = await conn.execute(
            "INSERT INTO epcis_queries (owner, name, query, created_by) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (owner(who), name, Jsonb(body["query"]), who.name),
        )
    if cur.rowcount == 0:
        raise EpcisProblem(
            409, "ResourceAlreadyExistsException", N_("Resource already exists"),
            N_("a named query {name!r} exists"), params={"name": name},
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
    async with pool(request).connection() as conn:
        cur = await conn.execute(
            "SELECT name, query FROM epcis_queries WHERE owner = %s ORDER BY name", (owner(who),)
        )
        rows = await cur.fetchall()
    return JSONResponse([{"name": n, "query": q} for n, q in rows], headers=VERSION_HEADERS)


@router.get(
    "/queries/{name}",
    responses={**NAMED, 200: {"description": "The definition", "content": {
        "application/json": {"schema": _DEFINITION_SCHEMA}}}},
)  # fmt: skip
async def get_query(request: Request, who: Reader, name: str) -> JSONResponse:
    """A named query's definition."""
    async with pool(request).connection() as conn:
        query = await definition(conn, who, name)
    return JSONResponse({"name": name, "query": query}, headers=VERSION_HEADERS)


@router.delete("/queries/{name}", status_code=204, responses=NAMED)
async def delete_query(request: Request, who: Reader, name: str) -> Response:
    """Forget a named query, and end its subscriptions."""
    if not QUERY_NAME.match(name):
        raise no_such(NO_NAMED_QUERY, name=name[:100])
    async with pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM epcis_queries WHERE owner = %s AND name = %s", (owner(who), name)
        )
    if cur.rowcount == 0:
        raise no_such(NO_NAMED_QUERY, name=name[:100])
    return Response(status_code=204)


@router.get(
    "/queries/{name}/events",
    responses={**QUERYING, 404: NAMED[404]},
    openapi_extra={"parameters": _PARAMETERS},
)
async def get_query_events(request: Request, who: Reader, name: str) -> Response:
    """The events of a named query (a partner's key: only its own parcels), a page at
    a time."""
    params = _multi(request)
    if unknown := set(params) - set(PAGING_PARAMETERS):
        raise bad_parameter(
            QueryParameterError(
                sorted(unknown)[0][:60], N_("a named query takes only perPage and nextPageToken")
            )
        )
    async with pool(request).connection() as conn:
        stored = await definition(conn, who, name)
    query = from_definition(stored)  # checked when it was stored
    return await _page(request, who, name, query, params)


def install(app: FastAPI) -> None:
    """Mount the EPCIS interface, answer its errors as problem details, and feed its
    subscriptions to the delivery engine while the app runs."""

    async def answer(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EpcisProblem)
        return exc.response(language(request))

    app.include_router(router)
    app.include_router(epcis_subscriptions.router)
    app.add_exception_handler(EpcisProblem, answer)
    epcis_feed.install(app)

"""What the EPCIS endpoints share: problem details typed as GS1's REST
binding types them, who may call (partners and staff, each key within its request
budget), and the named queries' owners.

A problem's `type` and `status` are the binding's and never change; its `title` and
`detail` are sentences people read, said in the caller's language (`?lang=`, then
Accept-Language, then the configured default; gettext domain `api`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.epcis_query import QueryParameterError
from api.language import Problem, say
from api.security import API_KEY_HEADER, BEARER, Caller, RateLimiter, caller
from parceltrack.i18n import ENGLISH, N_

VERSION_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
QUERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_BODY = 64 * 1024
STAFF = ""  # the owner of the staff's named queries (a partner's is its account)


class EpcisProblem(Exception):
    """An error answered as RFC 7807 problem details, typed as the binding types it.

    `title` and `detail` are message ids; `detail`'s `{name}` fields come from
    `params`, and `field` (a parameter's or member's name, never translated) leads it."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        field: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.field, self.params = field, dict(params or {})
        self.headers = headers or {}
        super().__init__(self.said(ENGLISH)[1])

    def said(self, lang: str) -> tuple[str, str]:
        """The title and the detail in `lang`."""
        detail = say(self.detail, lang, self.params)
        return say(self.title, lang, {}), f"{self.field}: {detail}" if self.field else detail

    def response(self, lang: str = ENGLISH) -> JSONResponse:
        title, detail = self.said(lang)
        body = {
            "type": f"epcisException:{self.kind}",
            "title": title,
            "status": self.status,
            "detail": detail,
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        return JSONResponse(
            body,
            status_code=self.status,
            media_type="application/problem+json",
            headers={**headers, **self.headers},
        )


def bad_parameter(exc: QueryParameterError) -> EpcisProblem:
    """The query parameter `exc` refuses, named before the reason."""
    return EpcisProblem(
        400,
        "QueryParameterException",
        N_("Invalid query parameter"),
        exc.problem,
        field=exc.name,
        params=exc.params,
    )


def invalid(field: str, detail: str, **params: Any) -> EpcisProblem:
    """The request body's member `field` is refused: `detail` says why."""
    return EpcisProblem(
        400, "ValidationException", N_("Invalid request body"), detail, field=field, params=params
    )


def no_such(what: str, **params: Any) -> EpcisProblem:
    return EpcisProblem(404, "NoSuchNameException", N_("Resource not found"), what, params=params)


UNAUTHORISED = N_("Unauthorised request")
NO_NAMED_QUERY = N_("no named query {name!r}")


async def reader(
    request: Request,
    # Declared for the OpenAPI document (ApiKey / Bearer): `caller` reads the key itself.
    _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Caller:
    """A partner key, or a controller's or above; problem details otherwise."""
    try:
        who = await caller(request)
    except Problem as exc:  # a bad key: its reason, in the caller's language
        raise EpcisProblem(
            401, "SecurityException", UNAUTHORISED, exc.message, params=exc.params
        ) from exc
    if who is None:
        raise EpcisProblem(
            401,
            "SecurityException",
            UNAUTHORISED,
            N_("this needs an API key: a partner's, or a controller's or above"),
        )
    if not (who.may("partner") or who.may("controller")):
        raise EpcisProblem(
            403,
            "SecurityException",
            N_("Access to resource forbidden"),
            N_("role {role} may not query EPCIS events; needs partner or controller"),
            params={"role": who.role},
        )
    # A partner's system may loop over queries: one bucket per key, as for lookups.
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.wait_for(f"key:{who.key_id}")
    if wait > 0:
        raise EpcisProblem(
            429,
            "TooManyRequestsException",
            N_("Too many requests"),
            N_("too many requests for this key; slow down"),
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return who


Reader = Annotated[Caller, Depends(reader)]


def owner(who: Caller) -> str:
    return who.scope if who.scope is not None else STAFF


def pool(request: Request) -> AsyncConnectionPool[Any]:
    found: AsyncConnectionPool[Any] = request.app.state.pool
    return found


def problem(description: str) -> dict[str, Any]:
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


Responses = dict[int | str, dict[str, Any]]
AUTH: Responses = {
    401: problem("No API key, or an unknown one"),
    403: problem("Not a partner or staff"),
    429: problem("Too many requests for this key; see Retry-After"),
}
NAMED: Responses = {**AUTH, 404: problem("No named query of that name (for this caller)")}


async def json_body(request: Request) -> dict[str, Any]:

    body = await request.body()
    if len(body) > MAX_BODY:
        raise invalid("body", N_("over {most} bytes"), most=MAX_BODY)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", N_("not JSON")) from None
    if not isinstance(data, dict):
        raise invalid("body", N_("must be a JSON object"))
    return data


async def definition(conn: AsyncConnection[Any], who: Caller, name: str) -> Any:
    if not QUERY_NAME.match(name):  # could never have been stored
        raise no_such(NO_NAMED_QUERY, name=name[:100])
    cur = await conn.execute(
        "SELECT query FROM epcis_queries WHERE owner = %s AND name = %s", (owner(who), name)
    )
    row = await cur.fetchone()
    if row is None:
        raise no_such(NO_NAMED_QUERY, name=name[:100])
    return row[0]


# What a client may accept for an EPCIS document (JSON; JSON-LD is JSON).
_ACCEPTED = ("application/json", "application/ld+json", "application/*", "*/*")


def check_accept(request: Request) -> None:
    """406 NotAcceptableException when the Accept header rules out JSON (XML, say)."""
    accept = request.headers.get("accept")
    if not accept:
        return
    offered = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if not offered & set(_ACCEPTED):
        raise EpcisProblem(
            406,
            "NotAcceptableException",
            N_("Not acceptable"),
            N_("this repository answers application/json (EPCIS 2.0 JSON) only"),
            field="Accept",
        )

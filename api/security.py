"""Who is calling: API keys (stored hashed) with a role, and a per-client rate limit.

A key is `pt_` + 43 url-safe characters from `secrets` (256 bits). Only its sha256
is stored: with that much entropy a slow hash adds nothing, and a lookup stays one
index probe. The key is shown once, at creation. Keys are accepted as
`Authorization: Bearer <key>` or `X-API-Key: <key>`; neither is ever logged.

Staff roles are ranked (customer < controller < manager < admin). A `partner` key
stands apart: it belongs to one account (an e-commerce shipper) and sees only the
parcels whose manifest row names that account (`Caller.account`, `visible`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.language import Problem
from parceltrack.i18n import N_

Role = Literal["customer", "controller", "manager", "admin", "partner"]
# The staff roles, ranked; the partner role is outside the ranking.
ROLES: tuple[Role, ...] = ("customer", "controller", "manager", "admin")
PARTNER: Role = "partner"
# Each role may do what the roles before it may: a manager can also work alerts.
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# A partner may do nothing a staff role may: it is never ranked above anyone.
_RANK[PARTNER] = -1
KEY_PREFIX = "pt_"
_UNKNOWN = object()  # no key looked up yet for this request

# The two ways to present a key, as OpenAPI security schemes: every operation that
# needs a key declares both (either will do), so /docs can authorise and generated
# clients know a key is needed. They only document: `caller` reads the headers.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="An API key (`pt_...`, from `parceltrack api create-key`).",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="The same API key as `Authorization: Bearer <key>`.",
    auto_error=False,
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated key: its id, the name it was given (who acts), its role and,
    for a partner, its account."""

    key_id: int
    name: str
    role: Role
    account: str | None = None

    def may(self, role: Role) -> bool:
        if role == PARTNER:
            return self.role == PARTNER
        return _RANK[self.role] >= _RANK[role]

    @property
    def scope(self) -> str | None:
        """The one account whose parcels this caller sees; None: every parcel."""
        return self.account if self.role == PARTNER else None


def visible(who: Caller | None, parcel_account: str | None) -> bool:
    """The partner-scoping hook of parcel lookups: a partner key sees a parcel only
    when the manifest names its account; anyone else sees what the endpoint shows."""
    return who is None or who.scope is None or who.scope == parcel_account


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def create_key(
    conn: AsyncConnection[Any], name: str, role: Role, account: str | None = None
) -> tuple[int, str]:
    """Store a new key's hash; return its id and the key itself (shown once). A partner
    key needs its account, and only a partner key has one (ValueError otherwise)."""
    if (role == PARTNER) != (account is not None):
        raise ValueError("a partner key needs an account, and only a partner key has one")
    key = new_key()
    cur = await conn.execute(
        "INSERT INTO api_keys (key_hash, prefix, name, role, account) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING key_id",
        (key_hash(key), key[:7], name, role, account),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), key


async def ensure_key(conn: AsyncConnection[Any], key: str, name: str, role: Role) -> None:
    """Register a key chosen by the operator (bootstrap admin key from the environment)."""
    await conn.execute(
        "INSERT INTO api_keys (key_hash, prefix, name, role) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (key_hash) DO UPDATE SET role = EXCLUDED.role, revoked_at = NULL",
        (key_hash(key), key[:7], name, role),
    )


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def caller(request: Request) -> Caller | None:
    """The caller behind the request's key; None when it presents none; 401 for a bad one.

    Remembered on the request, so the rate limiter and the handler look the key up once."""
    known = getattr(request.state, "caller", _UNKNOWN)
    if known is not _UNKNOWN:
        return cast(Caller | None, known)
    key = presented_key(request)
    if key is None:
        request.state.caller = None
        return None
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT key_id, name, role, account FROM api_keys "
            "WHERE key_hash = %s AND revoked_at IS NULL",
            (key_hash(key),),
        )
        row = await cur.fetchone()
    if row is None:
        raise Problem(401, N_("unknown or revoked API key"), headers={"WWW-Authenticate": "Bearer"})
    who = Caller(int(row[0]), str(row[1]), row[2], row[3])
    request.state.caller = who
    return who


def require(role: Role) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency admitting callers whose role is `role` or above."""

    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> Caller:
        who = await caller(request)
        if who is None:
            raise Problem(
                401,
                N_("this needs an API key with role {role} or above"),
                headers={"WWW-Authenticate": "Bearer"},
                role=role,
            )
        if not who.may(role):
            raise Problem(
                403, N_("role {held} may not do this; needs {role}"), held=who.role, role=role
            )
        return who

    return dependency


@dataclass(slots=True)
class TokenBucket:
    """Allow `rate` requests a second on average with bursts of `burst`."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.stamp = self.burst, -math.inf

    def take(self, now: float) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is free."""
        if self.stamp != -math.inf:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets per client: the API key's hash when one is given, else the
    client address. The least recently seen clients are forgotten beyond `max_clients`."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0  # requests answered 429 since start (GET /metrics)

    def wait_for(self, client: str) -> float:
        bucket = self._buckets.pop(client, None) or TokenBucket(self.rate, self.burst)
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        wait = bucket.take(self.clock())
        if wait > 0:
            self.refused += 1
        return wait


async def client_identity(request: Request) -> str:
    """A valid key's id, else the client address. A key that is presented must be
    valid (401 otherwise): random keys must not buy fresh buckets."""
    who = await caller(request)
    if who is not None:
        return f"key:{who.key_id}"
    return "ip:" + (request.client.host if request.client else "unknown")


async def rate_limited(request: Request) -> None:
    """Dependency: 429 with Retry-After when this client has used up its bucket."""
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.wait_for(await client_identity(request))
    if wait > 0:
        raise Problem(
            429,
            N_("too many requests; slow down"),
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

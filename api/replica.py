"""Reads from a streaming replica, never older than what the reader has already seen.

An API instance may take a read-only DSN (a PostgreSQL streaming replica) for what
only reads: parcel lookups, KPIs, pages. Writes always go to the primary. A replica
replays the primary's WAL a little behind it, so the rule that keeps a customer from
seeing a parcel go back in time is:

1. **Every read answer carries a position** (`X-Parceltrack-Position` header, and a
   cookie of the same name that browsers send back): the WAL position the answer is
   at least as new as, taken *after* the read (`pg_last_wal_replay_lsn()` on the
   replica, `pg_current_wal_lsn()` on the primary).
2. **A replica more than `max_lag_s` behind, or unreachable, serves nobody**: a
   probe compares it with the primary every second; meanwhile reads go to the
   primary.
3. **A request that brings a position is read from the replica only when the
   replica has replayed at least that far**, checked on the very connection that
   then reads (replay only moves forward, so what it reads next is at least as new).
   Otherwise it is read from the primary.

So a client that returns the position gets monotonic reads across replica, primary
and any failover between them; every client gets data at most about `max_lag_s`
old (plus the probe's interval). The rule holds for one replica per API instance (several replicas
behind one load balancer would each need the same check, which rule 2 already does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from fastapi import Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

T = TypeVar("T")

POSITION = "X-Parceltrack-Position"
COOKIE = "parceltrack_position"


def parse_lsn(text: str | None) -> int | None:
    """A PostgreSQL LSN ('16/B374D848') as a number; None when absent or malformed."""
    if not text:
        return None
    high, sep, low = text.strip().partition("/")
    if not sep:
        return None
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        return None


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class ReplicaState:
    """What the probe last learnt: how far behind the replica is, and when."""

    lag_s: float = float("inf")
    reachable: bool = False
    checked_at: float = 0.0


@dataclass
class ReadRouting:
    """Which pool serves a read: the replica's, or the primary's (see the module doc)."""

    primary: AsyncConnectionPool[Any]
    replica: AsyncConnectionPool[Any] | None = None
    max_lag_s: float = 2.0
    probe_every_s: float = 1.0
    state: ReplicaState = field(default_factory=ReplicaState)
    served: dict[str, int] = field(default_factory=lambda: {"replica": 0, "primary": 0})

    def replica_usable(self) -> bool:
        fresh = time.monotonic() - self.state.checked_at < 3 * self.probe_every_s + 1
        return (
            self.replica is not None
            and self.state.reachable
            and fresh
            and self.state.lag_s <= self.max_lag_s
        )

    @contextlib.asynccontextmanager
    async def reading(self, seen: int | None) -> AsyncIterator[tuple[AsyncConnection[Any], str]]:
        """A connection to read from, and which server it is ('replica' or 'primary')."""
        conn = await self._replica_connection(seen)
        if conn is not None and self.replica is not None:
            try:
                self.served["replica"] += 1
                yield conn, "replica"
            finally:
                await self.replica.putconn(conn)
            return
        # getconn/putconn rather than connection(): that one also enters the connection's
        # own context, whose commit on exit is a lock round for nothing in autocommit
        # (the pool's connections are); putconn still rolls back or replaces a
        # connection left in a transaction or broken.
        conn = await self.primary.getconn()
        try:
            self.served["primary"] += 1
            yield conn, "primary"
        finally:
            await self.primary.putconn(conn)

    async def _replica_connection(self, seen: int | None) -> AsyncConnection[Any] | None:
        """A replica connection that has replayed at least to `seen`, or None.

        The replay check runs on the connection that will read, so it also proves
        the connection alive: a replica that went away sends the read to the primary.
        """
        if self.replica is None or not self.replica_usable():
            return None
        try:
            conn: AsyncConnection[Any] = await self.replica.getconn(timeout=1.0)
        except Exception:  # pool timeout or connection refused: the replica is down
            self.state.reachable = False
            return None
        try:
            replayed = await _replayed(conn)
        except _Unreachable:
            self.state.reachable = False
            await self.replica.putconn(conn)
            return None
        if replayed >= (seen or 0):
            return conn
        await self.replica.putconn(conn)
        return None

    async def position(self, conn: AsyncConnection[Any], server: str) -> int:
        """The WAL position an answer just read on `conn` is at least as new as."""
        if server == "replica":
            return await _replayed(conn)
        cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
        row = await cur.fetchone()
        return parse_lsn(row[0] if row else None) or 0

    async def probe_forever(self) -> None:
        """Keep `state` current: the replica's lag behind the primary, in seconds."""
        while True:
            await self.probe()
            await asyncio.sleep(self.probe_every_s)

    async def probe(self) -> None:
        if self.replica is None:
            return
        try:
            async with asyncio.timeout(2):
                async with self.primary.connection() as conn:
                    cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
                    row = await cur.fetchone()
                    primary_lsn = parse_lsn(row[0] if row else None) or 0
                async with self.replica.connection() as conn:
                    cur = await conn.execute(
                        "SELECT pg_last_wal_replay_lsn()::text, "
                        "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
                    )
                    replayed, since_last = await cur.fetchone() or (None, None)
        except Exception:  # unreachable or failing: reads go to the primary meanwhile
            if self.state.reachable:
                log.warning("replica unreachable; reads go to the primary", exc_info=True)
            self.state = ReplicaState(float("inf"), False, time.monotonic())
            return
        behind = (parse_lsn(replayed) or 0) < primary_lsn
        # Caught up: no lag, however long ago the last transaction was. Behind: the
        # age of the last transaction it replayed is how stale its answers can be.
        lag = float(since_last or 0.0) if behind else 0.0
        if behind and since_last is None:
            lag = float("inf")
        self.state = ReplicaState(lag, True, time.monotonic())


class _Unreachable(Exception):
    pass


async def _replayed(conn: AsyncConnection[Any]) -> int:
    try:
        cur = await conn.execute("SELECT pg_last_wal_replay_lsn()::text")
        row = await cur.fetchone()
    except Exception as exc:
        raise _Unreachable from exc
    return parse_lsn(row[0] if row else None) or 0


def seen_position(request: Request) -> int | None:
    """The position a client brings: the header (API clients) or the cookie (browsers)."""
    return parse_lsn(request.headers.get(POSITION) or request.cookies.get(COOKIE))


@dataclass
class Read:
    """One request's read: the connection, the server it is on, and its position."""

    routing: ReadRouting
    conn: AsyncConnection[Any]
    server: str

    async def headers(self) -> dict[str, str]:
        """The position headers for the answer (none when no replica is configured:
        every read is then on the primary, and the extra round trip is not paid)."""
        if self.routing.replica is None:
            return {}
        position = format_lsn(await self.routing.position(self.conn, self.server))
        return {
            POSITION: position,
            "Set-Cookie": f"{COOKIE}={position}; Path=/; SameSite=Lax; HttpOnly",
        }


async def read_with(request: Request, work: Callable[[Read], Awaitable[T]]) -> T:
    """Run `work` on a read for this request, on the replica when the rule allows, else
    the primary. A replica that goes away
    under the read (stopped, restarted, failed over: the replay check passed, then
    the connection broke) sends it to the primary once, instead of answering 500; the
    replica serves nobody until the probe finds it again."""
    routing: ReadRouting = request.app.state.reads
    async with routing.reading(seen_position(request)) as (conn, server):
        try:
            return await work(Read(routing, conn, server))
        except psycopg.OperationalError:
            if server != "replica":
                raise
            routing.state.reachable = False
            log.warning("replica connection lost during a read; read again on the primary")
    async with routing.primary.connection() as conn:
        routing.served["primary"] += 1
        return await work(Read(routing, conn, "primary"))

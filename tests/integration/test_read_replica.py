"""Reads from a real streaming replica (pg_basebackup), never older than what was seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from api.replica import Read, ReadRouting, format_lsn, parse_lsn, read_with
from composition.services import PrivatePostgres
from tests.waiting import wait_until


@dataclass
class Pair:
    primary: PrivatePostgres
    replica: PrivatePostgres


@pytest.fixture(scope="module")
def pair(services_dir: Path) -> Iterator[Pair]:
    root = services_dir / f"replication-{time.monotonic_ns()}"
    primary = PrivatePostgres(root / "primary")
    primary.start()
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE seen (n int PRIMARY KEY)")
    replica = primary.replica(root / "replica")
    replica.start()
    try:
        yield Pair(primary, replica)
    finally:
        replica.destroy()
        primary.destroy()


def _write(pair: Pair, n: int) -> None:
    with psycopg.connect(pair.primary.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO seen VALUES (%s)", (n,))


def _on_replica(pair: Pair, sql: str) -> Any:
    with psycopg.connect(pair.replica.dsn(), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


async def _read(routing: ReadRouting, seen: int | None) -> tuple[str, int, int]:
    """(server, highest n visible, position) of one read, as the API makes it."""
    async with routing.reading(seen) as (conn, server):
        cur = await conn.execute("SELECT coalesce(max(n), 0) FROM seen")
        row = await cur.fetchone()
        position = await routing.position(conn, server)
    return server, int(row[0] if row else 0), position


def _run(pair: Pair, scenario: Any, max_lag_s: float = 2.0) -> Any:
    async def main() -> Any:
        kwargs = {"autocommit": True}
        async with (
            AsyncConnectionPool(pair.primary.dsn(), min_size=1, kwargs=kwargs) as primary,
            AsyncConnectionPool(pair.replica.dsn(), min_size=1, kwargs=kwargs) as replica,
        ):
            routing = ReadRouting(primary, replica, max_lag_s=max_lag_s, probe_every_s=0.2)
            await routing.probe()
            return await scenario(routing)

    return asyncio.run(main())


def test_positions_are_wal_lsns() -> None:
    """An LSN survives the round trip through the header form; junk is no position."""
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848") or 0) == "16/B374D848"
    assert parse_lsn("garbage") is None and parse_lsn("") is None and parse_lsn("1/zz") is None


def test_the_replica_streams_what_the_primary_commits(pair: Pair) -> None:
    """A row committed on the primary appears on the replica; the replica refuses writes."""
    _write(pair, 1)
    wait_until(lambda: _on_replica(pair, "SELECT count(*) FROM seen WHERE n = 1") == 1, 15,
               "the row replayed")  # fmt: skip
    assert _on_replica(pair, "SELECT pg_is_in_recovery()") is True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        _on_replica(pair, "INSERT INTO seen VALUES (99)")


def test_a_caught_up_replica_serves_reads(pair: Pair) -> None:
    """With the replica caught up, reads without a position go to it."""
    _write(pair, 2)
    wait_until(lambda: _on_replica(pair, "SELECT max(n) FROM seen") == 2, 15, "replay")

    async def scenario(routing: ReadRouting) -> tuple[str, int, int]:
        return await _read(routing, None)

    server, highest, _ = _run(pair, scenario)
    assert (server, highest) == ("replica", 2)


def test_a_lagging_replica_never_shows_older_state_than_was_seen(pair: Pair) -> None:
    """Replay paused: a reader whose position is ahead of the replica reads the primary,
    and readers with no position leave the replica once its lag passes the bound."""
    _on_replica(pair, "SELECT pg_wal_replay_pause()")
    try:
        _write(pair, 3)
        time.sleep(1.0)  # the replica's last replayed transaction ages past the bound

        async def scenario(routing: ReadRouting) -> list[tuple[str, int, int]]:
            first = await _read(routing, None)  # the probe already saw the lag
            # A client that saw n=3 on the primary comes back with its position.
            again = await _read(routing, first[2])
            return [first, again]

        first, again = _run(pair, scenario, max_lag_s=0.5)
        assert first[:2] == ("primary", 3)
        assert again[:2] == ("primary", 3)
    finally:
        _on_replica(pair, "SELECT pg_wal_replay_resume()")
    wait_until(lambda: _on_replica(pair, "SELECT max(n) FROM seen") == 3, 15, "replay resumed")

    async def caught_up(routing: ReadRouting) -> tuple[str, int, int]:
        return await _read(routing, None)

    assert _run(pair, caught_up)[:2] == ("replica", 3)


def test_a_position_the_replica_has_replayed_is_served_by_it(pair: Pair) -> None:
    """A reader's position at or behind the replica's replay keeps it on the replica."""
    _write(pair, 4)
    wait_until(lambda: _on_replica(pair, "SELECT max(n) FROM seen") == 4, 15, "replay")

    async def scenario(routing: ReadRouting) -> tuple[str, int, int]:
        _, _, position = await _read(routing, None)
        return await _read(routing, position)

    server, highest, _ = _run(pair, scenario)
    assert (server, highest) == ("replica", 4)


def test_reads_move_to_the_primary_while_the_replica_is_down(pair: Pair) -> None:
    """Replica stopped: every read is answered by the primary; started again: by the replica."""

    async def scenario(routing: ReadRouting) -> list[str]:
        servers = [(await _read(routing, None))[0]]
        await asyncio.to_thread(pair.replica.stop)
        try:
            for seen in (None, 1):
                servers.append((await _read(routing, seen))[0])
            await routing.probe()
            servers.append((await _read(routing, None))[0])
        finally:
            await asyncio.to_thread(pair.replica.start)
        await routing.probe()
        await routing.replica.check() if routing.replica else None  # drop dead connections
        servers.append((await _read(routing, None))[0])
        return servers

    assert _run(pair, scenario) == ["replica", "primary", "primary", "primary", "replica"]


def test_a_replica_connection_lost_during_a_read_is_read_again_on_the_primary(
    pair: Pair,
) -> None:
    """The replay check passed, then the replica's backend went away under the query (a
    replica stopped or restarted mid-read): the read is made again on the primary, once,
    and the replica serves nobody until the probe finds it again; no error reaches the
    caller (the topology test saw a 500 here)."""
    _write(pair, 5)
    wait_until(lambda: _on_replica(pair, "SELECT max(n) FROM seen") == 5, 10, "replayed")

    async def scenario(routing: ReadRouting) -> tuple[list[str], str, bool]:
        app = SimpleNamespace(state=SimpleNamespace(reads=routing))
        request = Request({"type": "http", "headers": [], "app": app})
        servers: list[str] = []

        async def work(read: Read) -> int:
            servers.append(read.server)
            if read.server == "replica":
                cur = await read.conn.execute("SELECT pg_backend_pid()")
                pid = (await cur.fetchone() or (0,))[0]
                await asyncio.to_thread(
                    _on_replica, pair, f"SELECT pg_terminate_backend({int(pid)})"
                )
            cur = await read.conn.execute("SELECT coalesce(max(n), 0) FROM seen")
            return int((await cur.fetchone() or (0,))[0])

        highest = await read_with(request, work)
        after, _, _ = await _read(routing, None)
        return servers, after, highest == 5

    servers, after, complete = _run(pair, scenario)
    assert servers == ["replica", "primary"] and complete
    assert after == "primary"  # until the next probe

"""The scan feed: every committed scan reaches a follower once, in commit order.

A time column cannot order commits: `now()` is the start of the transaction, and
a transaction may commit long after a later one began (a slow disk, a lock, an
ingest worker stalled mid-batch). So every scan carries the id of the
transaction that wrote it (`scans.xact_id`, a column default), and every writing
transaction logs itself once in `scan_commits` (`record_commit`, in the same
transaction, so both become visible together).

A follower's position is a PostgreSQL snapshot reduced to what it needs: `xmax`
(every transaction id below it had finished when the snapshot was taken, except
those `in_flight`) and `in_flight`. The transactions a follower has not seen yet
are exactly those visible now that were either at or above the old `xmax` or in
its `in_flight`: `commits_after` reads them from `scan_commits` inside a
REPEATABLE READ transaction whose snapshot becomes the next position. No overlap
window, no duplicates to filter, however long a transaction stays open.

A follower that restarts needs no stored position: it rebuilds its state from the
scans visible in one snapshot (`snapshot`) and follows from that same snapshot.
One that stores its position with its state (detection's checkpoint) may resume
from it while `can_follow` says pruning has not passed it.

Following, in a stage of its own (an autocommit connection, outside transactions):

    with feed.snapshot(conn) as start:         # rebuild from what this snapshot sees
        ...
    position = start
    while running:
        with feed.snapshot(conn) as now:
            commits = feed.commits_after(conn, position)
            if commits:
                rows = conn.execute(f"SELECT ... FROM scans s WHERE {feed.SCANS_OF_COMMITS}",
                                    commits.params()).fetchall()
        position = now                            # only once the rows are handled

`scan_commits` is pruned by `prune`, with an `xmin` taken long enough ago that
every follower has moved past it (a transaction below an old snapshot's xmin
had finished before that snapshot was taken).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from parceltrack.errors import ParceltrackError

Conn = psycopg.Connection[Any]


class FeedError(ParceltrackError):
    """The feed was used outside the transaction it needs."""


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """Where a follower stands: it has seen every transaction below `xmax` that is
    not `in_flight`; `xmin` is the oldest transaction still running then."""

    xmin: int
    xmax: int
    in_flight: tuple[int, ...] = ()

    @classmethod
    def parse(cls, snapshot: str) -> FeedPosition:
        """From PostgreSQL's text form of a snapshot, `xmin:xmax:xip,xip,...`."""
        xmin, xmax, xip = snapshot.split(":")
        return cls(int(xmin), int(xmax), tuple(int(x) for x in xip.split(",") if x))

    def text(self) -> str:
        """The text form `parse` reads (how a follower stores its position)."""
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in self.in_flight)}"


@dataclass(frozen=True, slots=True)
class Commits:
    """Transactions that committed scans since a position, and where their rows are."""

    xact_ids: tuple[int, ...]
    ts_from: datetime | None
    ts_to: datetime | None

    def __bool__(self) -> bool:
        return bool(self.xact_ids)

    def params(self) -> dict[str, Any]:
        """Parameters of `SCANS_OF_COMMITS`."""
        return {
            "xact_ids": [str(x) for x in self.xact_ids],
            "ts_from": self.ts_from,
            "ts_to": self.ts_to,
        }


# The rows of `Commits` in `scans` (aliased `s`): the ts range prunes partitions and
# chunks (a compressed chunk is never opened for a recent commit), the index on
# xact_id finds the rows inside them.
SCANS_OF_COMMITS = (
    "s.xact_id = ANY(%(xact_ids)s::text[]::xid8[]) AND s.ts >= %(ts_from)s AND s.ts < %(ts_to)s"
)


def record_commit(conn: Conn, days: Iterable[date]) -> None:
    """Log the caller's transaction as a writer of scans whose `ts` fall on `days`
    (UTC). Call it inside the transaction that writes them, once or more."""
    days = sorted(set(days))
    if not days:
        return
    ts_from = datetime.combine(days[0], time(), UTC)
    ts_to = datetime.combine(days[-1], time(), UTC) + timedelta(days=1)
    conn.execute(
        "INSERT INTO scan_commits (ts_from, ts_to) VALUES (%s, %s) "
        "ON CONFLICT (xact_id) DO UPDATE SET ts_from = least(scan_commits.ts_from, "
        "EXCLUDED.ts_from), ts_to = greatest(scan_commits.ts_to, EXCLUDED.ts_to)",
        (ts_from, ts_to),
    )


@contextmanager
def snapshot(conn: Conn) -> Iterator[FeedPosition]:
    """A REPEATABLE READ transaction on `conn` and the position its snapshot stands
    for: whatever is read inside sees exactly the commits before that position."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise FeedError("the scan feed needs a connection outside any transaction")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield current_position(conn)


def current_position(conn: Conn) -> FeedPosition:
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return FeedPosition.parse(str(row[0]))


def commits_after(conn: Conn, position: FeedPosition) -> Commits:
    """The scan-writing transactions visible in the current snapshot that were not
    visible at `position`; call it inside `snapshot`."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        raise FeedError("commits_after must run inside feed.snapshot")
    rows = conn.execute(
        "SELECT xact_id::text, ts_from, ts_to FROM scan_commits "
        "WHERE xact_id >= %s::text::xid8 OR xact_id = ANY(%s::text[]::xid8[])",
        (str(position.xmax), [str(x) for x in position.in_flight]),
    ).fetchall()
    if not rows:
        return Commits((), None, None)
    return Commits(
        tuple(sorted(int(r[0]) for r in rows)),
        min(r[1] for r in rows),
        max(r[2] for r in rows),
    )


def committed_between(
    column: str, older: FeedPosition, newer: FeedPosition, name: str = "feed"
) -> tuple[str, dict[str, Any]]:
    """A condition on `column` (the xid8 of the transaction that wrote a row) and its
    parameters: the row was not visible at `older` and was visible at `newer`.

    For another log than `scan_commits` whose rows carry their writer's id (a column
    defaulting to `pg_current_xact_id()`), read in a snapshot at or after `newer`, so
    every row it finds is committed. A committed transaction is visible in a snapshot
    exactly when its id is below the snapshot's `xmax` and not in flight in it. With
    `newer` taken a while ago, the reader gets each commit once, that long after it.
    """
    p = f"{name}_"
    condition = (
        f"({column} >= %({p}old_xmax)s::text::xid8 "
        f"OR {column} = ANY(%({p}old_flight)s::text[]::xid8[])) "
        f"AND {column} < %({p}new_xmax)s::text::xid8 "
        f"AND NOT {column} = ANY(%({p}new_flight)s::text[]::xid8[])"
    )
    return condition, {
        f"{p}old_xmax": str(older.xmax),
        f"{p}old_flight": [str(x) for x in older.in_flight],
        f"{p}new_xmax": str(newer.xmax),
        f"{p}new_flight": [str(x) for x in newer.in_flight],
    }


def visible_at(
    column: str, position: FeedPosition, name: str = "feed"
) -> tuple[str, dict[str, Any]]:
    """A condition on `column` (as in `committed_between`): the row's writer had
    committed at `position`; rows with no writer id (older than the log) count as
    committed."""
    p = f"{name}_"
    condition = (
        f"({column} IS NULL OR ({column} < %({p}at_xmax)s::text::xid8 "
        f"AND NOT {column} = ANY(%({p}at_flight)s::text[]::xid8[])))"
    )
    return condition, {
        f"{p}at_xmax": str(position.xmax),
        f"{p}at_flight": [str(x) for x in position.in_flight],
    }


def prune(conn: Conn, finished_before: int) -> int:
    """Delete the log of transactions below `finished_before`, an `xmin` that every
    follower's position has passed; returns the rows deleted."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM scan_commits WHERE xact_id < %s::text::xid8", (str(finished_before),)
        )
        conn.execute(
            "INSERT INTO scan_commits_pruned (pruned_below) VALUES (%s::text::xid8) "
            "ON CONFLICT (only_row) DO UPDATE SET pruned_below = "
            "greatest(scan_commits_pruned.pruned_below, EXCLUDED.pruned_below)",
            (str(finished_before),),
        )
    return max(cur.rowcount, 0)


def can_follow(conn: Conn, position: FeedPosition) -> bool:
    """Whether every commit after a stored `position` is still logged: false once
    `prune` passed its `xmin` (every transaction it still waits for is at or above it)."""
    row = conn.execute("SELECT pruned_below::text FROM scan_commits_pruned").fetchone()
    return row is None or int(row[0]) <= position.xmin

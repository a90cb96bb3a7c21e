"""The commit-ordered scan feed (storage/feed.py) against a real PostgreSQL (and
TimescaleDB when PARCELTRACK_TIMESCALE_DSN is set): every committed scan once,
whatever the order and length of the writing transactions, across restarts."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage import feed
from storage.migrations import has_timescale

T0 = datetime.now(UTC)


def _events(device: str, n: int, start: int = 0, age_s: float = 0.0) -> list[ScanEvent]:
    return [
        ScanEvent(
            device=device,
            boot=1,
            seq=start + i,
            ts=T0 - timedelta(seconds=age_s + i),
            site="LHR1",
            read_point="LHR1-TUN1",
            kind=EventKind.READ,
            code="RR473124829GB",
            tracking_id="RR473124829GB",
        )
        for i in range(n)
    ]


def _ids(events: list[ScanEvent]) -> set[str]:
    return {e.id for e in events}


@pytest.fixture
def feed_dsn(storage_dsn: str) -> str:
    """A migrated database whose partitions for these scans already exist (a writer
    held open here would otherwise hold the new day's partition lock)."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        ScanPartitions(has_timescale(conn)).ensure(conn, {T0.date(), (T0 - timedelta(1)).date()})
    return storage_dsn


class Follower:
    """A feed follower that keeps every event id it was given, duplicates included."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.seen: Counter[str] = Counter()
        with feed.snapshot(conn) as position:
            self.position = position

    def poll(self) -> list[str]:
        with feed.snapshot(self.conn) as position:
            commits = feed.commits_after(self.conn, self.position)
            rows = (
                self.conn.execute(
                    f"SELECT s.event_id FROM scans s WHERE {feed.SCANS_OF_COMMITS}",
                    commits.params(),
                ).fetchall()
                if commits
                else []
            )
        self.position = position
        ids = [str(r[0]) for r in rows]
        self.seen.update(ids)
        return ids


def _write(dsn: str, events: list[ScanEvent], hold_s: float = 0.0, commit: bool = True) -> None:
    """One ingest transaction through the ingest's own write path, held open `hold_s`."""
    with psycopg.connect(dsn) as conn:
        write_scans(conn, events, ScanPartitions(has_timescale(conn)))
        time.sleep(hold_s)
        if commit:
            conn.commit()
        else:
            conn.rollback()


def test_a_long_transaction_is_delivered_when_it_commits_not_before_and_not_twice(
    feed_dsn: str,
) -> None:
    """A transaction begun first and committed last reaches the follower after the
    transactions that committed while it was open, once, whatever its age."""
    slow = _events("slow", 5)
    fast = _events("fast", 5)
    with (
        psycopg.connect(feed_dsn, autocommit=True) as reader,
        psycopg.connect(feed_dsn) as writer,
    ):
        follower = Follower(reader)
        write_scans(writer, slow, ScanPartitions(has_timescale(writer)))  # begun, not committed
        _write(feed_dsn, fast)
        assert set(follower.poll()) == _ids(fast)
        assert follower.poll() == []
        writer.commit()
        assert set(follower.poll()) == _ids(slow)
        assert follower.poll() == []
    assert max(follower.seen.values()) == 1


def test_a_transaction_writing_late_reads_of_yesterday_is_delivered_whole(feed_dsn: str) -> None:
    """A replay batch whose reads span yesterday and today (two partitions or chunks)
    reaches the follower whole: the logged time range covers both days."""
    late = _events("replay", 3, age_s=86_400.0) + _events("replay", 3, start=3)
    with psycopg.connect(feed_dsn, autocommit=True) as reader:
        follower = Follower(reader)
        _write(feed_dsn, late)
        assert set(follower.poll()) == _ids(late)


def test_rolled_back_transactions_are_never_delivered(feed_dsn: str) -> None:
    """Scans of a transaction that rolls back never reach the follower; later ones do."""
    with psycopg.connect(feed_dsn, autocommit=True) as reader:
        follower = Follower(reader)
        _write(feed_dsn, _events("gone", 3), commit=False)
        kept = _events("kept", 3)
        _write(feed_dsn, kept)
        assert set(follower.poll()) == _ids(kept)


def test_concurrent_writers_with_random_commit_delays_reach_the_follower_exactly_once(
    feed_dsn: str,
) -> None:
    """Four writers commit 60 transactions in an order unlike their start order (some
    held up to 1.5 s, a few rolled back) while the follower polls: each committed scan
    arrives once, no rolled-back scan arrives."""
    rng = random.Random(13)
    plan = [
        (f"w{w}", t, rng.choice([0.0, 0.0, 0.05, 0.3, 1.5]), rng.random() > 0.1)
        for w in range(4)
        for t in range(15)
    ]
    committed = {
        e.id for device, t, _hold, ok in plan if ok for e in _events(device, 20, start=t * 20)
    }

    def writer(w: int) -> None:
        for device, t, hold, ok in plan:
            if device == f"w{w}":
                _write(feed_dsn, _events(device, 20, start=t * 20), hold, ok)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    with psycopg.connect(feed_dsn, autocommit=True) as reader:
        follower = Follower(reader)
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            follower.poll()
            time.sleep(0.02)
        for th in threads:
            th.join()
        follower.poll()
    assert set(follower.seen) == committed
    assert max(follower.seen.values()) == 1


def test_a_restart_from_one_snapshot_neither_loses_nor_repeats_a_scan(feed_dsn: str) -> None:
    """A follower that stops, then rebuilds from the scans one snapshot sees and follows
    from that snapshot, gets every scan once while writers keep committing, one of them
    across the restart."""
    first = _events("a", 10)
    _write(feed_dsn, first)
    with psycopg.connect(feed_dsn) as long_writer:
        across = _events("across", 10)
        write_scans(long_writer, across, ScanPartitions(has_timescale(long_writer)))
        _write(feed_dsn, _events("b", 10))
        with psycopg.connect(feed_dsn, autocommit=True) as reader:
            seen: Counter[str] = Counter()
            with feed.snapshot(reader) as position:  # the restart's replay
                seen.update(str(r[0]) for r in reader.execute("SELECT event_id FROM scans"))
            follower = Follower(reader)
            follower.position = position
            _write(feed_dsn, _events("c", 10))
            long_writer.commit()
            follower.poll()
            seen.update(follower.seen)
    every = _ids(first) | _ids(across) | _ids(_events("b", 10)) | _ids(_events("c", 10))
    assert set(seen) == every
    assert max(seen.values()) == 1


def test_pruned_commits_are_those_below_an_old_xmin(feed_dsn: str) -> None:
    """Pruning below a snapshot's xmin keeps the log of a transaction still open then."""
    with psycopg.connect(feed_dsn, autocommit=True) as conn, psycopg.connect(feed_dsn) as w:
        _write(feed_dsn, _events("old", 2))
        write_scans(w, _events("open", 2), ScanPartitions(has_timescale(w)))
        xmin = feed.current_position(conn).xmin
        w.commit()
        assert feed.prune(conn, xmin) == 1
        (left,) = conn.execute("SELECT count(*) FROM scan_commits").fetchone() or (0,)
        assert left == 1


def test_the_feed_refuses_a_connection_inside_a_transaction(feed_dsn: str) -> None:
    """A snapshot taken inside another transaction would not be the feed's: refused."""
    with psycopg.connect(feed_dsn) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(feed.FeedError), feed.snapshot(conn):
            pass

"""The hourly rollups (storage/rollup.py) against the raw-SQL figures (storage/figures.py
QUERIES), on plain PostgreSQL and on TimescaleDB when PARCELTRACK_TIMESCALE_DSN is set:
scans committed in many transactions, out of order and late, rolled up step by step,
give the raw figures exactly (counts and rates) and within the histogram's bucket
error (dwell percentiles)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import s10_check_digit
from storage import figures, rollup
from storage.migrations import has_timescale
from tests.api.conftest import SCENARIO, SITE, seed

PLAN = {e.destination: e.chute for e in SCENARIO.sort_plans[0].entries}
CLASSES = [c.service_class for c in SCENARIO.service_classes]


@dataclass(frozen=True, slots=True)
class Loaded:
    dsn: str
    period: figures.Period
    rolled: int  # scans the steps rolled up


def _tracking(n: int) -> str:
    serial = f"{70_000_000 + n:08d}"
    return f"CP{serial}{s10_check_digit(serial)}GB"


def _events(rng: random.Random, t0: datetime, parcels: int) -> dict[str, list[ScanEvent]]:
    """Routes through induction, tunnel, sorter, a chute (one in five the wrong one) and
    the door (one in six never gets there); waits from under a second to 15 minutes."""
    routes: dict[str, list[ScanEvent]] = {}
    seq = 10_000
    for n in range(parcels):
        tracking = _tracking(n)
        dest = rng.choice(sorted(PLAN))
        chute = PLAN[dest] if rng.random() > 0.2 else rng.choice(sorted(set(PLAN.values())))
        steps = [f"{SITE}-IND1", f"{SITE}-TUN1", f"{SITE}-SRT1", chute]
        if rng.random() > 1 / 6:
            steps.append(chute.replace("CHU", "DOR"))
        at = t0 + timedelta(seconds=rng.uniform(0, 7200))
        events = []
        for rp in steps:
            seq += 1
            events.append(_scan(rp, seq, at, tracking))
            at += timedelta(seconds=rng.choice([rng.uniform(0, 1), rng.uniform(1, 900)]))
        routes[tracking] = events
        routes.setdefault("", []).extend(
            _scan(f"{SITE}-TUN1", seq * 10 + k, at, None) for k in range(rng.randint(0, 1))
        )
    return routes


def _scan(rp: str, seq: int, at: datetime, tracking: str | None) -> ScanEvent:
    kind = EventKind.READ if tracking else EventKind.NOREAD
    return ScanEvent(
        device=f"{rp}-rollup", boot=1, seq=seq, ts=at, site=SITE, read_point=rp, kind=kind,
        code=tracking, tracking_id=tracking,
    )  # fmt: skip


def _write(conn: psycopg.Connection[object], events: list[ScanEvent]) -> None:
    with conn.transaction():
        write_scans(conn, events, ScanPartitions(has_timescale(conn)))


def _step(dsn: str) -> int:
    return rollup.catch_up(dsn).scans


def load(dsn: str, seed_value: int) -> Loaded:
    """Seed the layout, then write 60 parcels' scans in shuffled transactions with rollup
    steps between: each parcel's first read last (a late read that splits waits already
    counted and moves its arrival), a transaction held open across a step and
    committed after a later one, and a batch that only ever exists as scans of a
    transaction rolled back."""
    seed(dsn)
    rng = random.Random(seed_value)
    now = datetime.now(UTC)
    t0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    routes = _events(rng, t0, 60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n, tracking in enumerate(t for t in routes if t):
            conn.execute(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
                "accepted_at) VALUES (%s, %s, %s, %s, %s)",
                (tracking, CLASSES[n % len(CLASSES)], rng.choice(sorted(PLAN)), SITE,
                 t0 - timedelta(days=rng.choice([0, 0, 9]))),
            )  # fmt: skip
    # The destination decides the planned chute: keep the route's chute right or wrong.
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tracking, events in routes.items():
            chute = next((e.read_point for e in events if "CHU" in e.read_point), None)
            if tracking and chute is not None:
                dest = next(d for d, c in PLAN.items() if c == chute)
                conn.execute(
                    "UPDATE parcels SET destination = %s WHERE tracking_id = %s", (dest, tracking)
                )
    firsts = [events[0] for t, events in routes.items() if t]
    rest = [e for t, events in routes.items() for e in (events[1:] if t else events)]
    rng.shuffle(rest)
    rolled = _step(dsn)  # a rebuild over the seed's scans
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Partitions first: the transaction held open below must not hold their DDL.
        ScanPartitions(has_timescale(conn)).ensure(conn, {e.ts.date() for e in rest + firsts})
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn) as held:
        # Opened first, committed last: its transaction id is below the others'.
        write_scans(held, rest[:40], ScanPartitions(has_timescale(held)))
        for start in range(40, len(rest), 50):
            _write(conn, rest[start : start + 50])
            rolled += _step(dsn)
        with psycopg.connect(dsn) as undone:
            write_scans(undone, firsts[:5], ScanPartitions(has_timescale(undone)))
            undone.rollback()
        held.commit()
    rolled += _step(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, len(firsts), 7):  # the late first reads
            _write(conn, firsts[start : start + 7])
            rolled += _step(dsn)
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return Loaded(dsn, figures.Period(t0, until, SITE, lost_after_s=1800), rolled)


@pytest.fixture
def loaded(storage_dsn: str) -> Loaded:
    return load(storage_dsn, 16)


async def _both(dsn: str, period: figures.Period) -> tuple[dict[str, figures.Figure], ...]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        raw = {f.name: f for f in await figures.raw_figures(conn, period)}
        rolled = {f.name: f for f in await figures.all_figures(conn, period)}
    return raw, rolled


def _scans(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM scans").fetchone()
    assert row is not None
    return int(row[0])


def _assert_equal(raw: dict[str, figures.Figure], rolled: dict[str, figures.Figure]) -> None:
    for name in ("on_time", "rates", "complaints", "uptime"):
        assert rolled[name].columns == raw[name].columns, name
        assert rolled[name].rows == raw[name].rows, name
    assert rolled["dwell"].columns == raw["dwell"].columns
    exact = {r[:4]: r for r in raw["dwell"].rows}
    assert [r[:4] for r in rolled["dwell"].rows] == list(exact)
    for row in rolled["dwell"].rows:
        want = exact[row[:4]]
        assert row[4] == want[4], row[:4]  # reads
        for got, true in zip(row[5:], want[5:], strict=True):
            # rollup.percentiles: within 5.9 % of the wait, or 0.5 s in bucket 0.
            assert abs(got - true) <= 0.0594 * true + 0.5, (row[:4], got, true)


def test_rollups_give_the_raw_figures(loaded: Loaded) -> None:
    """Every scan committed (none of the rolled-back ones) is rolled up once, and the
    figures from the rollups equal the raw SQL's: counts and rates exactly, dwell
    percentiles within the bucket error."""
    assert loaded.rolled == _scans(loaded.dsn)
    raw, rolled = asyncio.run(_both(loaded.dsn, loaded.period))
    seen = sum(r[2] for r in raw["rates"].rows)
    assert seen == 64  # the seed's 4 parcels and 60 more
    assert sum(r[3] for r in raw["on_time"].rows) > 20
    assert sum(r[3] for r in raw["rates"].rows) > 0  # some lost
    assert sum(r[6] for r in raw["rates"].rows) > 0  # some mis-sorted
    _assert_equal(raw, rolled)


def test_a_rebuild_gives_what_the_steps_gave(loaded: Loaded) -> None:
    """Without a stored position the next step rebuilds from every scan, with the same
    figures as the steps built up; a step with nothing new changes nothing."""
    _raw, stepped = asyncio.run(_both(loaded.dsn, loaded.period))
    with psycopg.connect(loaded.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM rollup_position")
    done = rollup.catch_up(loaded.dsn)
    assert done.rebuilt and done.scans == _scans(loaded.dsn)
    assert rollup.catch_up(loaded.dsn) == rollup.Step(0, False, pytest.approx(0, abs=60))
    _raw, rebuilt = asyncio.run(_both(loaded.dsn, loaded.period))
    assert rebuilt == stepped


def test_a_period_of_some_hours_and_every_site(loaded: Loaded) -> None:
    """One whole hour in the middle, every site: the same throughput as the raw SQL,
    and per read point and hour at least its waits (the raw SQL loses a wait whose
    next read falls after the period; the rollups count it in the hour it began)."""
    period = figures.Period(
        loaded.period.since + timedelta(hours=1), loaded.period.since + timedelta(hours=2),
        None, lost_after_s=1800,
    )  # fmt: skip
    raw, rolled = asyncio.run(_both(loaded.dsn, period))
    assert raw["dwell"].rows
    assert [(r[:2], r[8:10]) for r in rolled["rates"].rows] == [
        (r[:2], r[8:10]) for r in raw["rates"].rows
    ]
    reads = {r[:4]: r[4] for r in rolled["dwell"].rows}
    assert all(reads.get(r[:4], 0) >= r[4] for r in raw["dwell"].rows)
    assert sum(reads.values()) > sum(r[4] for r in raw["dwell"].rows)


def test_a_page_request_does_not_wait_for_another_stepper(loaded: Loaded) -> None:
    """While another stepper holds the step (`parceltrack quality` rebuilding, say), a
    step that may not wait (a page request's) is skipped at once and changes nothing;
    one that waits runs after it."""
    with psycopg.connect(loaded.dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (rollup._LOCK_KEY,))
        with psycopg.connect(loaded.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM rollup_position")  # the next step must rebuild
        assert rollup.catch_up(loaded.dsn, wait=False) is rollup.SKIPPED
        other.execute("SELECT pg_advisory_unlock(%s)", (rollup._LOCK_KEY,))
    assert rollup.catch_up(loaded.dsn, wait=False).rebuilt

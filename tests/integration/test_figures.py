"""The manager page's figures (storage/figures.py) against the real schema, on plain
PostgreSQL and on TimescaleDB when PARCELTRACK_TIMESCALE_DSN is set: each query runs,
and each raw-SQL figure (the reference the rollups are checked against in
test_rollup.py) matches what the scans written here imply."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage import figures, rollup
from storage.migrations import has_timescale
from tests.api.conftest import SCENARIO, SITE, seed

# Parcels of the scenario the API seed leaves unscanned.
PARCELS = [m.tracking_id for m in SCENARIO.manifest][5:8]
PLAN = {e.destination: (e.chute, e.door) for e in SCENARIO.sort_plans[0].entries}
DEST = {m.tracking_id: m.destination for m in SCENARIO.manifest}


@dataclass(frozen=True, slots=True)
class Written:
    dsn: str
    t0: datetime
    period: figures.Period
    routes: dict[str, list[tuple[str, int]]]


def _route(tracking: str, wrong: bool) -> list[tuple[str, int]]:
    chute, door = PLAN[DEST[tracking]]
    if wrong:
        chute = next(c for d, (c, _) in PLAN.items() if c != chute)
    steps = [f"{SITE}-IND1", f"{SITE}-TUN1", f"{SITE}-SRT1", chute]
    return [(rp, 0) for rp in steps] + ([] if wrong else [(door, 0)])


def write(dsn: str) -> Written:
    """Three parcels an hour or two ago: one on time, one mis-sorted and lost, one late."""
    seed(dsn)
    t0 = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=2)
    on_time, missorted, late = PARCELS
    offsets = {
        on_time: [0, 20, 50, 60, 100],
        missorted: [5, 45, 65, 80],
        late: [10, 20, 40, 50, 70],
    }
    routes = {
        p: [(rp, off) for (rp, _), off in zip(_route(p, p == missorted), offsets[p], strict=True)]
        for p in PARCELS
    }
    events, seq = [], 1000
    for tracking, route in routes.items():
        for rp, off in route:
            seq += 1
            events.append(_scan(rp, seq, t0 + timedelta(seconds=off), tracking))
    for off in (30, 31):
        seq += 1
        events.append(_scan(f"{SITE}-TUN1", seq, t0 + timedelta(seconds=off), None))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            write_scans(conn, events, ScanPartitions(has_timescale(conn)))
        for tracking, accepted in ((on_time, t0 - timedelta(hours=1)),
                                   (missorted, t0 - timedelta(days=30)),
                                   (late, t0 - timedelta(days=30))):  # fmt: skip
            conn.execute(
                "UPDATE parcels SET accepted_at = %s WHERE tracking_id = %s", (accepted, tracking)
            )
        # Two complaints: answered in an hour, and one whose 1-hour deadline has passed.
        for tracking, answered in ((on_time, t0 + timedelta(minutes=70)), (late, None)):
            conn.execute(
                "INSERT INTO feedback (tracking_id, kind, message, snapshot, site_id, created_at, "
                "deadline, first_answer_at) VALUES (%s, 'complaint', 'where is it', '{}', %s, "
                "%s, %s, %s)",
                (tracking, SITE, t0, t0 + timedelta(days=7) if answered else t0, answered),
            )
        device = conn.execute("SELECT min(device_id) FROM devices").fetchone()
        assert device is not None
        conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, device_id, opened_at, state, "
            "resolved_at) VALUES (%s, 'silence', %s, %s, %s, 'resolved', %s)",
            (f"silence:{device[0]}", SITE, device[0], t0, t0 + timedelta(minutes=10)),
        )
    period = figures.Period(t0 - timedelta(minutes=10), t0 + timedelta(minutes=50), SITE)
    return Written(dsn, t0, period, routes)


def _scan(rp: str, seq: int, at: datetime, tracking: str | None) -> ScanEvent:
    kind = EventKind.READ if tracking else EventKind.NOREAD
    return ScanEvent(
        device=f"{rp}-fig", boot=1, seq=seq, ts=at, site=SITE, read_point=rp, kind=kind,
        code=tracking, tracking_id=tracking,
    )  # fmt: skip


@pytest.fixture
def written(storage_dsn: str) -> Written:
    return write(storage_dsn)


async def _figures(dsn: str, period: figures.Period) -> dict[str, figures.Figure]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return {f.name: f for f in await figures.raw_figures(conn, period)}


async def _rolled(dsn: str, period: figures.Period) -> dict[str, figures.Figure]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return {f.name: f for f in await figures.all_figures(conn, period)}


def _rows(figure: figures.Figure) -> list[dict[str, object]]:
    return [dict(zip(figure.columns, row, strict=True)) for row in figure.rows]


def test_every_query_runs_on_the_schema(storage_dsn: str) -> None:
    """Each figure's SQL, raw and from the rollups, is valid on this storage flavour,
    even with no data at all."""
    now = datetime.now(UTC)
    period = figures.Period(now - timedelta(days=1), now)
    rollup.catch_up(storage_dsn)
    for found in (
        asyncio.run(_figures(storage_dsn, period)),
        asyncio.run(_rolled(storage_dsn, period)),
    ):
        assert sorted(found) == sorted(figures.names())
        assert all(not f.rows for name, f in found.items() if name != "uptime")


def test_on_time_counts_parcels_that_left_by_their_due_time(written: Written) -> None:
    """The parcel accepted an hour before it left is on time; the one a month old is not."""
    on_time = _rows(asyncio.run(_figures(written.dsn, written.period))["on_time"])
    assert sum(r["finished"] for r in on_time) == 2  # type: ignore[misc]
    assert sum(r["on_time"] for r in on_time) == 1  # type: ignore[misc]
    assert {r["day"] for r in on_time} == {written.t0.date().isoformat()}


def test_rates_follow_the_scans(written: Written) -> None:
    """Three parcels seen, one mis-sorted of three chuted, one lost, two no-reads."""
    (rates,) = _rows(asyncio.run(_figures(written.dsn, written.period))["rates"])
    reads = sum(len(route) for route in written.routes.values())
    assert (rates["parcels_seen"], rates["lost"]) == (3, 1)
    assert (rates["chuted"], rates["missorted"]) == (3, 1)
    assert (rates["scans"], rates["noreads"]) == (reads + 2, 2)
    assert rates["mis_sort_rate"] == pytest.approx(1 / 3)
    assert rates["no_read_rate"] == pytest.approx(2 / (reads + 2))


def test_dwell_is_the_wait_until_the_next_read_by_read_point_and_hour(written: Written) -> None:
    """p50 and p95 per read point equal the percentiles of the waits the routes imply."""
    dwell = _rows(asyncio.run(_figures(written.dsn, written.period))["dwell"])
    waits: dict[str, list[int]] = {}
    for route in written.routes.values():
        for (rp, at), (_next_rp, next_at) in itertools.pairwise(route):
            waits.setdefault(rp, []).append(next_at - at)
    assert {r["read_point_id"] for r in dwell} == set(waits)
    assert {r["hour"] for r in dwell} == {written.t0.hour}
    for r in dwell:
        expected = waits[str(r["read_point_id"])]
        assert r["reads"] == len(expected)
        assert r["dwell_p50_s"] == pytest.approx(np.quantile(expected, 0.5))
        assert r["dwell_p95_s"] == pytest.approx(np.quantile(expected, 0.95))


def test_complaints_are_set_against_their_deadline(written: Written) -> None:
    """One complaint answered in 70 minutes within its week; one past its deadline unanswered."""
    rows = _rows(asyncio.run(_figures(written.dsn, written.period))["complaints"])
    outcomes = sorted((r["outcome"], r["answer_s"]) for r in rows)
    assert outcomes[0] == ("answered in time", 70 * 60)
    assert outcomes[1][0] == "overdue"
    assert rows[0]["deadline_s"] == 7 * 86400 or rows[1]["deadline_s"] == 7 * 86400


def test_uptime_is_the_share_of_the_period_without_a_silence_alert(written: Written) -> None:
    """Ten silent minutes in the hour leave that device at 5/6; every other at 1."""
    rows = _rows(asyncio.run(_figures(written.dsn, written.period))["uptime"])
    down = [r for r in rows if r["silences"]]
    assert len(down) == 1 and down[0]["down_s"] == pytest.approx(600)
    assert down[0]["uptime"] == pytest.approx(5 / 6)
    assert all(r["uptime"] == 1 for r in rows if not r["silences"])


def test_due_time_depends_only_on_the_day_of_acceptance(storage_dsn: str) -> None:
    """What ON_TIME relies on: J+n added to any moment of a UTC day is the same span as
    J+n added to that day's start, for every weekday and n from 0 to 6."""
    with psycopg.connect(storage_dsn) as conn:
        row = conn.execute(
            "SELECT bool_and(add_working_days(t, n) - t = "
            "add_working_days(date_trunc('day', t, 'UTC'), n) - date_trunc('day', t, 'UTC')), "
            "count(*) FROM generate_series(timestamptz '2026-11-16 00:00+00', "
            "timestamptz '2026-11-30 00:00+00', interval '97 minutes') t, "
            "generate_series(0, 6) n"
        ).fetchone()
    assert row is not None and row[0] is True and row[1] > 1000


async def _snapshot_round_trip(dsn: str, now: datetime) -> tuple[object, object, object, object]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        first = await figures.refresh_snapshots(conn, now)
        stored = await figures.read_snapshot(conn, 7, now)
        live = await figures.all_figures(conn, figures.Period(now - timedelta(days=7), now))
        stale = await figures.read_snapshot(
            conn, 7, now + timedelta(seconds=figures.SNAPSHOT_MAX_AGE_S + 1)
        )
        return first, stored, live, stale


def test_snapshots_hold_the_figures_computed_ahead(written: Written) -> None:
    """A refresh computes the stalest standard period; what is stored reads back as the
    same figures computed live, and a snapshot past its age is not served."""
    now = datetime.now(UTC)
    first, stored, live, stale = asyncio.run(_snapshot_round_trip(written.dsn, now))
    assert first in ([1], [7], [30])
    if first != [7]:  # the 7-day one is taken by the next refreshes

        async def more() -> None:
            async with await psycopg.AsyncConnection.connect(written.dsn, autocommit=True) as c:
                while await figures.refresh_snapshots(c, now):
                    pass

        asyncio.run(more())
        first, stored, live, stale = asyncio.run(_snapshot_round_trip(written.dsn, now))
    assert stored is not None and stale is None
    body, computed_at = stored  # type: ignore[misc]
    assert computed_at == now
    week = figures.Period(now - timedelta(days=7), now)
    expected = figures.body(live, week)  # type: ignore[arg-type]
    got = figures.body(figures.from_body(body), week)
    assert _steady(got["figures"]) == _steady(expected["figures"])
    assert body["summary"] == expected["summary"]


def _steady(found: list[dict[str, object]]) -> list[object]:
    """The figures without an unanswered complaint's answer time (it grows until now)."""
    out: list[object] = []
    for figure in found:
        rows = figure["rows"]
        if figure["name"] == "complaints":
            rows = [r[:4] + r[5:] for r in rows]  # type: ignore[attr-defined, index]
        out.append((figure["name"], figure["columns"], rows))
    return out

"""The manager page's data load (GET /v1/manager/figures), beside the raw SQL.

A private PostgreSQL gets N parcels with S scans each from bench api's generator
(7 days of scans), its read points given the stages of a centre (induction ...
chutes, doors) so every figure has rows. The floor is the figures' SQL statements
(storage/figures.py) run directly, one after the other, on one connection; the
figures are the page's whole data load over HTTP from `parceltrack api`, summed
from the hourly rollups (storage/rollup.py): a custom period, one site, and the
page's standard period (`days=7`, also computed ahead by `parceltrack quality`,
whose cost is printed too). Before them, the rollups are built from the loaded
scans (the catch-up rate, scans/s). All over the last 7 days, best and median of
--repeat runs.
The load average is printed with the figures: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.security import key_hash, new_key
from bench.api import SITE, _serve, load
from bench.private import services
from composition.services import free_port, wait_for_port
from storage import feed, figures, rollup

GOAL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parcels", type=int, default=1_000_000)
    parser.add_argument("--scans-per-parcel", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each")
    parser.add_argument("--workdir", default=".local", help="where the private PostgreSQL lives")


def _stages(dsn: str, per_parcel: int) -> None:
    """First read point induction, then tunnel, sorters, the last but one a chute and the
    last a door, so on-time, mis-sort and dwell figures all have work to do."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE read_points SET stage = CASE position WHEN 1 THEN 'induction' "
            "WHEN 2 THEN 'tunnel' WHEN %(last)s - 1 THEN 'chute' WHEN %(last)s THEN 'dispatch' "
            "ELSE 'sort' END WHERE site_id = %(site)s",
            {"last": per_parcel, "site": SITE},
        )


def _raw_sql(dsn: str, period: figures.Period) -> dict[str, float]:
    """Seconds of each statement, run one after the other on one connection."""
    took = {}
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET work_mem = '{figures.WORK_MEM}'")  # as the API runs them
        for name, sql in figures.QUERIES.items():
            started = time.perf_counter()
            conn.execute(sql, period.params()).fetchall()
            took[name] = time.perf_counter() - started
    return took


def _http(port: int, key: str, query: str) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/manager/figures?{query}",
        headers={"Authorization": f"Bearer {key}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=1800) as answer:
        answer.read()
    return time.perf_counter() - started


async def _snapshot(dsn: str, now: datetime) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await figures.take_snapshot(conn, 7, now)


def run(args: argparse.Namespace) -> int:
    with services(args.workdir, "manager") as (dsn, mqtt_url):
        print(f"loading {args.parcels:,} parcels x {args.scans_per_parcel} scans ...", flush=True)
        return _bench(dsn, mqtt_url, args)


def _catch_up(dsn: str) -> tuple[int, float]:
    """The rollups built from the loaded scans (the first step rebuilds); scans, seconds."""
    done = rollup.catch_up(dsn)
    return done.scans, done.took_s


def _follow(dsn: str, commits: int = 10, parcels: int = 20_000) -> tuple[int, float]:
    """Following the feed: `commits` transactions each give `parcels` parcels one more
    read (as the ingest commits: with `feed.record_commit`), then one step rolls them
    up, looking up each parcel's previous read by index; scans, seconds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for k in range(1, commits + 1):
            with conn.transaction():
                cur = conn.execute(
                    "INSERT INTO scans (ts, event_id, device_id, site_id, read_point_id, kind, "
                    "tracking_id, code) SELECT p.accepted_at + interval '2 hours' + "
                    "%s * interval '30 seconds', 'BNC1-follow:1:' || %s || ':' || p.tracking_id, "
                    "'BNC1-follow', %s, %s || '-RP01', 'read', p.tracking_id, p.tracking_id "
                    "FROM (SELECT tracking_id, accepted_at FROM parcels ORDER BY tracking_id "
                    "LIMIT %s) p RETURNING (ts AT TIME ZONE 'UTC')::date",
                    (k, k, SITE, SITE, parcels),
                )
                feed.record_commit(conn, {row[0] for row in cur.fetchall()})
        done = rollup.catch_up(dsn)
    return done.scans, done.took_s


def _bench(dsn: str, mqtt_url: str, args: argparse.Namespace) -> int:
    took = load(dsn, args.parcels, args.scans_per_parcel)
    _stages(dsn, args.scans_per_parcel)
    key = new_key()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, name, role) VALUES (%s, %s, 'bench', "
            "'manager')",
            (key_hash(key), key[:7]),
        )
        counts: Any = conn.execute(
            "SELECT (SELECT count(*) FROM parcels), (SELECT count(*) FROM scans)"
        ).fetchone()
    print(f"loaded {counts[0]:,} parcels and {counts[1]:,} scans in {took:.0f} s", flush=True)
    rolled, rolling_s = _catch_up(dsn)
    print(f"rolled up {rolled:,} scans in {rolling_s:.1f} s", flush=True)
    followed, following_s = _follow(dsn)
    print(f"followed {followed:,} scans of 10 commits in {following_s:.1f} s", flush=True)
    until = datetime.now(UTC)
    since = until - timedelta(days=7)
    period = figures.Period(since, until)
    custom = f"since={since.isoformat()}&until={until.isoformat()}".replace("+", "%2B")
    queries = {
        "custom period (since, until), every site": custom,
        f"one site (site={SITE}), last 7 days": f"site={SITE}&days=7",
        "standard period (days=7, the page)": "days=7",
    }
    port = free_port()
    api = _serve(dsn, mqtt_url, port, 1)
    try:
        wait_for_port(port, timeout=60)
        _http(port, key, custom)  # warm: pool, plans, caches
        runs: list[dict[str, float]] = []
        pages: dict[str, list[float]] = {label: [] for label in queries}
        computing = []
        for _ in range(args.repeat):
            runs.append(_raw_sql(dsn, period))
            for label, query in queries.items():
                pages[label].append(_http(port, key, query))
            # What `parceltrack quality` does every 5 minutes (now from the rollups).
            computing.append(asyncio.run(_snapshot(dsn, datetime.now(UTC))))
        raw = [sum(r.values()) for r in runs]
    finally:
        api.terminate()
        api.wait(timeout=30)
    load1, load5, _ = os.getloadavg()
    print()
    print(f"manager page data, {counts[0]:,} parcels / {counts[1]:,} scans, last 7 days")
    print(f"load average {load1:.2f} (1 min), {load5:.2f} (5 min), {os.cpu_count()} cores")
    print(
        f"rollup catch-up: {rolled:,} scans in {rolling_s:.1f} s = "
        f"{rolled / max(rolling_s, 1e-9):,.0f} scans/s (a rebuild: every loaded scan)"
    )
    print(f"rollup following the feed: {followed:,} scans in {following_s:.1f} s = "
          f"{followed / max(following_s, 1e-9):,.0f} scans/s (one step, 10 commits)")  # fmt: skip
    print(f"{'':44} {'best s':>8} {'median s':>9}")
    print(
        f"{'raw SQL, 7 statements, 1 connection':44} {min(raw):8.2f} {statistics.median(raw):9.2f}"
    )
    for name in figures.QUERIES:
        each = [r[name] for r in runs]
        print(f"{'  ' + name:44} {min(each):8.2f} {statistics.median(each):9.2f}")
    print("GET /v1/manager/figures from the rollups:")
    for label, values in (*pages.items(), ("computing days=7 ahead (quality)", computing)):
        print(f"{'  ' + label:44} {min(values):8.3f} {statistics.median(values):9.3f}")
        print(f"{'    ratio to raw SQL':44} {min(values) / min(raw):8.4f}")
    met = all(statistics.median(v) < GOAL_S for v in pages.values())
    print(f"{'page data load, every kind: goal < 1 s':44} {'met' if met else 'NOT met':>8}")
    return 0

"""Detection restart: scans/s replayed through the engine, beside a raw fetch of the same rows.

A private PostgreSQL gets --scans scans of parcels read at the five stages of one
site within the last 20 hours (and their manifest rows); then, in the same run:
1. baseline: the restart's own query (detect/store.py:replay_scans) read through the
   same server-side cursor in the same chunks, rows only;
   (once untimed first, so that both timed passes read from a warm cache);
2. restart: `Detector.start`, what `parceltrack detect` runs when it starts: the same
   rows, chunk by chunk, through the engine, then the adoption of live alerts.
The goal (issue 17) is >= 1M scans/s, so that 50M scans replay in under a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from detect import store
from detect.service import Detector, DetectSettings
from ingest.store import ScanPartitions
from parceltrack.layout import Stage, Zone
from storage import model
from storage.migrations import migrate
from storage.reference import load_layout, load_standards

SITE = "RPL1"
STAGES = (("IND1", Zone.INDUCTION, Stage.INDUCTION), ("TUN1", Zone.TUNNEL, Stage.TUNNEL),
          ("SRT1", Zone.SORTER, Stage.SORT), ("CHU01", Zone.CHUTE, Stage.CHUTE),
          ("DOR01", Zone.DOOR, Stage.DISPATCH))  # fmt: skip
GOAL = 1_000_000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scans", type=int, default=2_000_000, help="scans to replay")
    parser.add_argument("--workdir", default=".local/bench-replay", help="private PostgreSQL")


def load(dsn: str, scans: int, now: datetime) -> None:
    """Layout, standards, manifest and scans: five reads a parcel, 30 s apart, parcels
    spread over the 20 hours before `now`."""
    parcels = scans // len(STAGES)
    ids = [f"{SITE}-{name}" for name, _zone, _stage in STAGES]
    data = model.ReferenceData(
        sites=(model.Site(SITE, "Replay bench centre"),),
        read_points=tuple(
            model.ReadPoint(rp, SITE, zone, stage, name, k + 1, nxt)
            for k, ((name, zone, stage), rp, nxt) in enumerate(
                zip(STAGES, ids, [*ids[1:], None], strict=True)
            )
        ),
        service_classes=(model.ServiceClass("standard", "", 2),),
        stage_standards=tuple(
            model.StageStandard(SITE, stage, "standard", 600.0) for _n, _z, stage in STAGES[:-1]
        ),
    )  # fmt: skip
    start = now - timedelta(hours=20)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        load_layout(conn, data)
        load_standards(conn, data)
        with conn.transaction():
            days = {(start + timedelta(days=d)).date() for d in range(3)}
            ScanPartitions(timescale=False).ensure(conn, days)
        conn.execute(
            "INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
            "accepted_at) SELECT 'CP' || lpad(i::text, 9, '0') || 'GB', 'standard', 'LON', "
            "%s, %s + i * (interval '19 hours' / %s) FROM generate_series(1, %s) i",
            (SITE, start, parcels, parcels),
        )
        conn.execute(
            "INSERT INTO scans (ts, event_id, device_id, site_id, read_point_id, kind, "
            "tracking_id, code, symbology) "
            "SELECT p.accepted_at + k * interval '30 seconds', "
            "'dev' || k || ':1:' || p.n, 'dev' || k, %s, (%s::text[])[k], 'read', "
            "p.tracking_id, p.tracking_id, ']C0' "
            "FROM (SELECT tracking_id, accepted_at, "
            "      substr(tracking_id, 3, 9)::int AS n FROM parcels) p, "
            "generate_series(1, %s) k",
            (SITE, ids, len(STAGES)),
        )
        conn.execute("VACUUM ANALYZE")


def raw_fetch(dsn: str, since: datetime) -> tuple[int, float]:
    """Rows and seconds of the restart's query read as rows only, chunk by chunk."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        rows = 0
        with conn.transaction(), conn.cursor(name="bench_replay") as cur:
            cur.itersize = 100_000
            cur.execute(
                f"SELECT {store._SCAN_COLUMNS} FROM {store._SCAN_FROM} WHERE s.ts > %s "
                "ORDER BY s.ts",
                (since,),
            )
            while chunk := cur.fetchmany(100_000):
                rows += len(chunk)
        return rows, time.perf_counter() - started


def restart(dsn: str, now: datetime) -> tuple[int, float]:
    """Parcels in the state and seconds of `Detector.start` (replay and adoption)."""
    detector = Detector(DetectSettings(dsn=dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        detector.start(conn, now.timestamp())
        took = time.perf_counter() - started
    assert detector.engine is not None
    return len(detector.engine.state), took


def run(args: argparse.Namespace) -> int:
    # Not a TemporaryDirectory: its mode 0700 would shut out the postgres user.
    from composition.services import PrivatePostgres

    root = Path(args.workdir).absolute() / f"run-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    server = PrivatePostgres(root / "postgres")
    try:
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE replay")
        dsn = server.dsn("replay")
        migrate(dsn)
        now = datetime.now(UTC)
        print(f"loading {args.scans:,} scans ...", flush=True)
        load(dsn, args.scans, now)
        since = now - timedelta(seconds=DetectSettings(dsn=dsn).rebuild_s)
        raw_fetch(dsn, since)  # untimed: both timed passes find the data cached alike
        load_before = os.getloadavg()[0]
        rows, fetch_s = raw_fetch(dsn, since)
        parcels, restart_s = restart(dsn, now)
        load_after = os.getloadavg()[0]
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)
    rate, floor = rows / restart_s, rows / fetch_s
    print()
    print(
        f"detection restart, {rows:,} scans of {parcels:,} parcels; load average "
        f"{load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'baseline: the same rows fetched only':40} {floor:>12,.0f} rows/s  {fetch_s:6.1f} s")
    print(f"{'restart (replay through the engine)':40} {rate:>12,.0f} scans/s {restart_s:6.1f} s")
    print(f"{'  ratio to the baseline':40} {rate / floor:>12.2f}")
    print(f"{'  50M scans at this rate':40} {50e6 / rate:>12.0f} s")
    print(f"  {'met' if rate >= GOAL else 'NOT met'}: >= {GOAL:,.0f} scans/s")
    return 0

"""Detection restart: scans/s replayed through the engine, beside a raw fetch of the same rows.

A private PostgreSQL gets --scans scans of parcels read at the five stages of one
site within the last 20 hours (and their manifest rows); then, in the same run:
1. baseline: the restart's own query (detect/store.py:replay_scans) read through the
   same server-side cursor in the same chunks, rows only;
   (once untimed first, so that both timed passes read from a warm cache);
2. restart: `Detector.start`, what `parceltrack detect` runs when it starts: the same
   rows, chunk by chunk, through the engine, then the adoption of live alerts;
3. restart from a checkpoint (`parceltrack detect --checkpoint-dir`): --active parcels
   still at the site (read at induction through the scan feed) join the state above
   and a tick takes them in; the state is written as a checkpoint; --since-checkpoint
   of them move on (what is committed between the last checkpoint and a crash); then
   `Detector.start` loads the checkpoint and catches up on those scans through the feed.
The goal (issue 17) is >= 1M scans/s, so that 50M scans replay in under a minute. A
restart from a checkpoint replays nothing of the past: its time grows with the parcels
in the state (load, adoption) and with the scans since the checkpoint (catch-up). The
extrapolation to 50M scans assumes the worst case, every parcel of them still active
(10M parcels of five reads; compaction normally keeps far fewer), and a minute of
scans at 10,000/s since the checkpoint (600,000), each part scaled linearly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from detect import checkpoint, store
from detect.service import Detector, DetectSettings
from ingest.store import ScanPartitions
from parceltrack.layout import Stage, Zone
from storage import model
from storage.feed import record_commit
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
    parser.add_argument(
        "--active", type=int, default=200_000, help="parcels in the checkpoint's state"
    )
    parser.add_argument(
        "--since-checkpoint",
        type=int,
        default=100_000,
        help="scans committed after the checkpoint, caught up on by the restart",
    )


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


def restart(
    conn: psycopg.Connection[Any], now: datetime, folder: Path | None = None
) -> tuple[Detector, float]:
    """The detector and seconds of `Detector.start` (replay, or checkpoint and catch-up,
    and adoption)."""
    detector = Detector(DetectSettings(dsn=conn.info.dsn, checkpoint_dir=folder))
    started = time.perf_counter()
    detector.start(conn, now.timestamp())
    took = time.perf_counter() - started
    assert detector.engine is not None
    return detector, took


ACTIVE_BASE = 100_000_000  # serials of the active parcels, apart from the loaded ones


def commit_reads(dsn: str, parcels: range, stage: int, at: datetime) -> None:
    """One read each of the active parcels `parcels` at `STAGES[stage]`, committed as
    the ingest commits (logged for the scan feed) in transactions of 10,000."""
    rp = f"{SITE}-{STAGES[stage][0]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for first in range(parcels.start, parcels.stop, 10_000):
            with conn.transaction():
                record_commit(conn, [at.date()])
                conn.execute(
                    "INSERT INTO scans (ts, event_id, device_id, site_id, read_point_id, kind, "
                    "tracking_id, code, symbology) "
                    "SELECT %s, 'active' || %s || ':1:' || i, 'dev-active', %s, %s, 'read', "
                    "'CP' || lpad(i::text, 9, '0') || 'GB', 'x', ']C0' "
                    "FROM generate_series(%s::int, %s::int) i",
                    (at, stage, SITE, rp, ACTIVE_BASE + first,
                     ACTIVE_BASE + min(first + 10_000, parcels.stop) - 1),
                )  # fmt: skip


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
        with psycopg.connect(dsn, autocommit=True) as conn:
            detector, restart_s = restart(conn, now)
            assert detector.engine is not None
            parcels = len(detector.engine.state)
            # Parcels still at the site (compaction drops those dispatched an hour ago):
            # what a checkpoint holds. Taken in by a tick, then written, as the service does.
            commit_reads(dsn, range(args.active), 0, now - timedelta(seconds=30))
            detector.step(conn, now.timestamp())
            active = len(detector.engine.state)
            folder = root / "checkpoints"
            detector.settings = replace(detector.settings, checkpoint_dir=folder)
            written = time.perf_counter()
            detector.save_checkpoint(now.timestamp())
            write_s = time.perf_counter() - written
        size = checkpoint.file_for(folder, None).stat().st_size
        # What arrives between the last checkpoint and a crash: the active parcels move.
        commit_reads(dsn, range(args.since_checkpoint), 1, now - timedelta(seconds=5))
        with psycopg.connect(dsn, autocommit=True) as conn:
            resumed, _ = restart(conn, now, folder)
        load_after = os.getloadavg()[0]
        if resumed.resumed is None:
            raise RuntimeError("the restart did not resume from the checkpoint")
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
    print(f"  {'met' if rate >= GOAL else 'NOT met'}: >= {GOAL:,.0f} scans/s (full replay)")
    _report_checkpoint(active, resumed, write_s, size)
    return 0


def _report_checkpoint(active: int, resumed: Detector, write_s: float, size: int) -> None:
    """What a restart from a checkpoint costs, and what that makes of 50M scans."""
    f = resumed.last_start
    assert f is not None
    total = f.load_s + f.scans_s + f.adopt_s
    print(
        f"{'restart from a checkpoint':40} {'':>12}           {total:6.2f} s"
        f"  ({active:,} parcels in the checkpoint, {f.scans:,} scans caught up through "
        "the feed)"
    )
    print(f"{'  of which: checkpoint load':40} {f.parcels / f.load_s:>12,.0f} parcels/s"
          f" {f.load_s:6.2f} s  ({size / 1e6:,.1f} MB, {size / f.parcels:.0f} bytes a parcel;"
          f" written in {write_s:.1f} s)")  # fmt: skip
    print(f"{'  of which: catch-up through the feed':40} {f.scans / f.scans_s:>12,.0f} scans/s"
          f" {f.scans_s:6.2f} s")  # fmt: skip
    print(f"{'  of which: adoption of live alerts':40} {'':>12}           {f.adopt_s:6.2f} s")
    # 50M scans of five reads: 10M parcels to load; a minute since the last checkpoint
    # at 10,000 scans/s: 600,000 scans to catch up on; the adoption scales with parcels.
    parcels_50m, since_50m = 50e6 / len(STAGES), 600_000
    load_50m = f.load_s / f.parcels * parcels_50m
    catch_up_50m = f.scans_s / max(f.scans, 1) * since_50m
    adopt_50m = f.adopt_s / f.parcels * parcels_50m
    print(
        f"{'  50M scans (10M parcels), 1 min since':40} "
        f"{load_50m + catch_up_50m + adopt_50m:>12.0f} s  (load {load_50m:.0f} s + catch-up "
        f"of {since_50m:,} scans {catch_up_50m:.0f} s + adoption {adopt_50m:.0f} s, each "
        "scaled linearly from this run)"
    )
    met = load_50m + catch_up_50m + adopt_50m < 60.0
    print(f"  {'met' if met else 'NOT met'}: a restart after 50M scans in under a minute")

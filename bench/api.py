"""Parcel lookup over HTTP at a fixed request rate, beside the same SQL run directly.

A private PostgreSQL gets N parcels with S scans each (generate_series, indexes
built after the load); `parceltrack api` serves it in worker processes; an
open-loop client sends lookups of random parcels at each of --rates requests/s over
keep-alive connections. Latency counts from when each request was due, so a
server that falls behind shows it (no coordinated omission). The floor is the
lookup's SQL statement (api/queries.py) run directly from one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvloop

from api.queries import LOOKUP
from composition.services import PrivateMosquitto, PrivatePostgres, free_port, wait_for_port
from ingest.store import ScanPartitions
from parceltrack.layout import Stage, Zone
from storage import model
from storage.migrations import migrate
from storage.reference import load_layout, load_standards

SITE = "BNC1"
DAYS = 7

_S10 = """
'CP' || lpad(i::text, 8, '0') || (
  SELECT CASE c WHEN 10 THEN 0 WHEN 11 THEN 5 ELSE c END FROM (
    SELECT 11 - (8 * d[1] + 6 * d[2] + 4 * d[3] + 2 * d[4] + 3 * d[5] + 5 * d[6]
                 + 9 * d[7] + 7 * d[8]) %% 11 AS c
    FROM (SELECT array(SELECT substr(lpad(i::text, 8, '0'), k, 1)::int
                       FROM generate_series(1, 8) k) AS d) AS digits) AS check_digit
)::text || 'GB'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parcels", type=int, default=1_000_000)
    parser.add_argument("--scans-per-parcel", type=int, default=20)
    parser.add_argument(
        "--rates",
        default="250,500,1000",
        help="lookups per second, comma-separated: one run each, same data and server",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument(
        "--workers",
        default="2",
        help="API worker processes; comma-separated: one server each, same data, back to back",
    )
    parser.add_argument("--connections", type=int, default=64, help="client connections")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="a checkout of the code to compare with (e.g. `git archive` of main): its API "
        "is served too, before this one, on the same data and with the same client",
    )
    parser.add_argument("--floor-lookups", type=int, default=3000)
    parser.add_argument("--workdir", default=".local", help="where the private PostgreSQL lives")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank); NaN for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load(dsn: str, parcels: int, per_parcel: int) -> float:
    """Layout, service class, parcels and scans; returns the seconds it took."""
    started = time.perf_counter()
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=DAYS
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        data = model.ReferenceData(
            sites=(model.Site(SITE, "Bench centre"),),
            read_points=tuple(
                model.ReadPoint(
                    f"{SITE}-RP{k:02d}", SITE, Zone.SORTER, Stage.SORT, f"Read point {k}", k,
                    f"{SITE}-RP{k + 1:02d}" if k < per_parcel else None,
                )
                for k in range(1, per_parcel + 1)
            ),
            service_classes=(model.ServiceClass("standard", "", 2),),
            stage_standards=(model.StageStandard(SITE, Stage.SORT, "standard", 600.0),),
        )  # fmt: skip
        load_layout(conn, data)
        load_standards(conn, data)
        conn.execute(
            f"INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
            f"accepted_at) SELECT {_S10}, 'standard', 'LON', %s, "
            f"%s + (i::float8 / %s) * interval '{DAYS} days' - interval '1 hour' "
            f"FROM generate_series(1, %s) i",
            (SITE, start, parcels, parcels),
        )
        days = {(start + timedelta(days=d)).date() for d in range(DAYS + 2)}
        with conn.transaction():
            ScanPartitions(timescale=False).ensure(conn, days)
        # Indexes are built after the load, as a bulk load should.
        conn.execute("DROP INDEX scans_event")
        conn.execute("DROP INDEX scans_parcel")
        chunk = 100_000
        for first in range(1, parcels + 1, chunk):
            last = min(parcels, first + chunk - 1)
            conn.execute(
                "INSERT INTO scans (ts, event_id, device_id, site_id, read_point_id, kind, "
                "tracking_id, code, symbology) "
                "SELECT t.accepted_at + interval '1 hour' + k * interval '30 seconds', "
                "'BNC1-dev' || k || ':1:' || t.n, 'BNC1-dev' || k, %s, "
                "%s || '-RP' || lpad(k::text, 2, '0'), 'read', t.tracking_id, t.tracking_id, "
                "']C0' FROM (SELECT tracking_id, accepted_at, "
                "substr(tracking_id, 3, 8)::int AS n FROM parcels "
                "WHERE tracking_id BETWEEN %s AND %s) t, generate_series(1, %s) k",
                (SITE, SITE, f"CP{first:08d}", f"CP{last:08d}ZZZ", per_parcel),
            )
            print(f"  scans for parcels {first}..{last}", flush=True)
        conn.execute("CREATE UNIQUE INDEX scans_event ON scans (event_id, ts)")
        conn.execute(
            "CREATE INDEX scans_parcel ON scans (tracking_id, ts DESC) "
            "WHERE tracking_id IS NOT NULL"
        )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def floor(dsn: str, ids: list[str], n: int) -> list[float]:
    """Latency of the lookup's SQL statement, run directly from one connection."""
    took: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            tracking_id = ids[i % len(ids)]
            t0 = time.perf_counter()
            conn.execute(LOOKUP, {"t": tracking_id}).fetchall()
            took.append(time.perf_counter() - t0)
    return took


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator, one request at a time.

    A bare protocol rather than asyncio streams and a task per request: the generator
    shares the two cores with what it measures, so its own CPU per request is kept low
    (bench/api.py prints it). It does what a client does: writes the request, reads the
    status line and headers, then Content-Length bytes of body.
    """

    def __init__(self, answered: Callable[[_Connection, int], None]) -> None:
        self.answered = answered
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.due = 0.0
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def usable(self) -> bool:
        """Not closed, nor closing: the server may have closed it while idle."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, path: bytes, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        length = 0
        at = head.lower().find(b"content-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at)
            length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = False
        self.answered(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:  # the request in flight is lost: an error, status 0
            self.busy = False
            self.answered(self, 0)


async def load_test(
    port: int, ids: list[str], rate: float, duration: float, connections: int
) -> tuple[list[float], int, float, int]:
    """Open loop: request i is due at i/rate; returns the latencies after the warm-up,
    errors, the achieved rate and the number of requests sent (warm-up included).

    A request that finds every connection busy waits for the first one free; its
    latency still counts from when it was due (no coordinated omission). Connections
    are used in turn, as a pool would, so none sits idle long enough for the server
    to close it; one that is closed all the same is replaced."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    warmup = 2.0
    total = int(rate * (duration + warmup))
    paths = [f"/v1/parcels/{ids[i % len(ids)]}".encode() for i in range(total)]
    latencies: list[float] = []
    errors = 0
    idle: deque[_Connection] = deque()
    waiting: deque[tuple[int, float]] = deque()
    counted = 0
    finished = loop.create_future()
    t0 = 0.0
    replacing: set[asyncio.Task[None]] = set()

    def free(conn: _Connection) -> None:
        if not conn.usable:
            replace_later()
        elif waiting:
            i, due = waiting.popleft()
            conn.send(paths[i], due)
        else:
            idle.append(conn)

    async def replace() -> None:
        _, conn = await loop.create_connection(lambda: _Connection(answered), "127.0.0.1", port)
        free(conn)

    def replace_later() -> None:
        task = loop.create_task(replace())
        replacing.add(task)
        task.add_done_callback(replacing.discard)

    def answered(conn: _Connection, status: int) -> None:
        nonlocal errors, counted
        if status != 200:
            errors += 1
        if status and conn.due - t0 >= warmup:
            latencies.append(clock() - conn.due)
        counted += 1
        free(conn)
        if counted == total and not finished.done():
            finished.set_result(None)

    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Connection(answered), "127.0.0.1", port)
        idle.append(conn)
    opened = list(idle)
    t0 = clock() + 0.1
    for i in range(total):
        due = t0 + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        while idle and not idle[0].usable:  # closed while idle: nothing was lost
            idle.popleft()
            replace_later()
        if idle:
            idle.popleft().send(paths[i], due)
        else:
            waiting.append((i, due))
    await finished
    elapsed = clock() - (t0 + warmup)
    for conn in [*opened, *idle]:
        if conn.transport is not None:
            conn.transport.close()
    return latencies, errors, len(latencies) / elapsed, total


def _cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if root_pid in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent busy (not idle or waiting on I/O)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuShares:
    """CPU seconds spent during one load run by each party on the two cores."""

    api: float
    postgres: float
    generator: float
    machine: float

    def __sub__(self, other: CpuShares) -> CpuShares:
        return CpuShares(
            self.api - other.api,
            self.postgres - other.postgres,
            self.generator - other.generator,
            self.machine - other.machine,
        )


def _cpu_now(api_pid: int, postmaster_pid: int) -> CpuShares:
    return CpuShares(
        _cpu_seconds(api_pid),
        _cpu_seconds(postmaster_pid),
        _own_cpu_seconds(),
        _machine_busy_seconds(),
    )


def _serve(
    dsn: str, mqtt_url: str, port: int, workers: int, src: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PARCELTRACK_DSN": dsn, "PARCELTRACK_MQTT_URL": mqtt_url}
    if src is not None:  # its packages come first on the path, ahead of this checkout's
        env["PYTHONPATH"] = str(src.absolute())
    return subprocess.Popen(
        [sys.executable, "-m", "composition.cli", "api", "--port", str(port),
         "--workers", str(workers), "--rate", "1e9", "--burst", "1e9"],
        env=env,
        cwd=src,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    # Not a TemporaryDirectory: its mode 0700 would shut out the postgres user.
    root = Path(args.workdir) / f"bench-api-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    server = PrivatePostgres(root / "postgres")
    broker = PrivateMosquitto(root / "mosquitto")
    try:
        server.start()
        broker.start()
        return _bench(server, broker.url, args)
    finally:
        broker.destroy()
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _bench(server: PrivatePostgres, mqtt_url: str, args: argparse.Namespace) -> int:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    dsn = server.dsn("bench")
    migrate(dsn)
    print(f"loading {args.parcels:,} parcels x {args.scans_per_parcel} scans ...", flush=True)
    took = load(dsn, args.parcels, args.scans_per_parcel)
    with psycopg.connect(dsn) as conn:
        counts: Any = conn.execute(
            "SELECT (SELECT count(*) FROM parcels), (SELECT count(*) FROM scans)"
        ).fetchone()
        rng = random.Random(7)
        sample = rng.sample(range(1, args.parcels + 1), min(50_000, args.parcels))
        ids = [
            str(t)
            for (t,) in conn.execute(
                "SELECT tracking_id FROM parcels WHERE substr(tracking_id, 3, 8)::int = ANY(%s)",
                (sample,),
            )
        ]
    rng.shuffle(ids)
    print(f"loaded {counts[0]:,} parcels and {counts[1]:,} scans in {took:.0f} s", flush=True)

    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    floor_s = floor(dsn, ids, args.floor_lookups)
    ms = 1000.0
    f50, f99 = percentile(floor_s, 0.5) * ms, percentile(floor_s, 0.99) * ms
    floor_rate = len(floor_s) / sum(floor_s)
    print()
    print(f"parcel lookup, {counts[0]:,} parcels / {counts[1]:,} scans")
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    print(f"{'SQL direct, 1 connection (floor)':34} {f50:8.2f} {f99:8.2f} {floor_rate:8.0f}")
    sources = [args.baseline_src, None] if args.baseline_src else [None]
    for workers in (int(w) for w in args.workers.split(",")):
        for src in sources:
            runs = _serve_and_load(dsn, mqtt_url, ids, workers, src, postmaster, args)
            label = f"{workers} API worker(s), " + (f"baseline {src}" if src else "this checkout")
            _report(label, runs, f50, f99)
    return 0


Run = tuple[float, list[float], int, float, int, CpuShares]


def _serve_and_load(
    dsn: str,
    mqtt_url: str,
    ids: list[str],
    workers: int,
    src: Path | None,
    postmaster: int,
    args: argparse.Namespace,
) -> list[Run]:
    port = free_port()
    api = _serve(dsn, mqtt_url, port, workers, src)
    runs: list[Run] = []
    try:
        wait_for_port(port, timeout=60)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/parcels/{ids[0]}", timeout=10).read()
        for rate in (float(r) for r in args.rates.split(",")):
            before = _cpu_now(api.pid, postmaster)
            result = uvloop.run(load_test(port, ids, rate, args.duration, args.connections))
            runs.append((rate, *result, _cpu_now(api.pid, postmaster) - before))
    finally:
        api.terminate()
        api.wait(timeout=30)
    return runs


def _report(label: str, runs: list[Run], f50: float, f99: float) -> None:
    """One server's figures; CPU per lookup of each party, from /proc, over the whole
    run (warm-up included), so `other` is what the rest of the machine took."""
    ms = 1000.0
    print()
    print(label)
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}   "
          f"CPU ms per lookup: {'API':>5} {'PG':>5} {'gen':>5} {'other':>5}")  # fmt: skip
    for rate, latencies, errors, achieved, sent, cpu in runs:
        a50, a99 = percentile(latencies, 0.5) * ms, percentile(latencies, 0.99) * ms
        label = f"HTTP lookup, offered {rate:.0f}/s"
        per = [x / max(1, sent) * ms for x in (cpu.api, cpu.postgres, cpu.generator)]
        other = (cpu.machine - cpu.api - cpu.postgres - cpu.generator) / max(1, sent) * ms
        print(f"{label:34} {a50:8.2f} {a99:8.2f} {achieved:8.0f} {errors:7d}   "
              f"{'':19}{per[0]:5.2f} {per[1]:5.2f} {per[2]:5.2f} {other:5.2f}")  # fmt: skip
        print(f"{'  ratio to floor':34} {a50 / f50:8.1f} {a99 / f99:8.1f}")
        met = a50 <= 5 and a99 <= 20 and achieved >= 0.98 * rate and errors == 0
        print(f"{'  goal p50<=5, p99<=20 ms':34} {'met' if met else 'NOT met':>8}")

"""End-to-end ingest: scans/s from publish to committed rows, beside a raw COPY of the same rows.

It starts a private PostgreSQL with durable defaults (fsync and synchronous
commit on) and a private Mosquitto, then measures in one run:
1. the ceiling: the same rows COPied straight into `scans` (no MQTT, no validation);
2. sustained ingest: a publisher process floods batches of events at QoS 1, ingest
   worker subprocesses validate and commit them; rate = events / (first publish to
   last commit);
3. latency: the publisher at a fixed rate, each message's events stamped when it
   is published; percentiles of publish-to-commit from the workers' histogram.

1 and 2 alternate for `--rounds` rounds, each into a database of its own, and the
ratio is the median of the rounds' ratios: on a shared machine the load moves
either figure by tens of percent within a minute, so one ceiling beside one flood
measured a minute apart says more about the load than about the ingest. Each round
also prints where the CPU went (PostgreSQL, workers, broker, per event, from
/proc), the profile that explains the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from composition.services import PrivateMosquitto, PrivatePostgres, free_port
from ingest.store import copy_scan_rows, scan_row
from parceltrack import topics, wire
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.mqtt import MqttClient
from parceltrack.wire import encode_batch
from storage.migrations import migrate

GOAL_RATE = 50_000.0
GOAL_RATIO = 0.80  # issue 17 (was 0.60)
GOAL_P99_S = 1.0
_DEVICES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the flood")
    parser.add_argument("--per-message", type=int, default=500, help="events per MQTT message")
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument(
        "--rounds", type=int, default=3, help="ceiling and flood, alternating, each"
    )
    parser.add_argument("--rate", type=float, default=10_000.0, help="latency phase, events/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--workdir", default=".local/bench-ingest", help="private services")
    parser.add_argument(
        "--receipt-rounds", type=int, default=3, help="floods with commit receipts on and off, each"
    )


def _events(device: str, boot: int, start: int, n: int, ts: datetime) -> list[ScanEvent]:
    return [
        ScanEvent(
            device=device, boot=boot, seq=s, ts=ts + timedelta(microseconds=s - start),
            site="LHR1",
            read_point=f"LHR1-{device}", kind=EventKind.READ, code="RR473124829GB",
            symbology="]C0", tracking_id="RR473124829GB",
        )
        for s in range(start, start + n)
    ]  # fmt: skip


def _flood_batches(events: int, per_message: int, ts: datetime) -> list[list[ScanEvent]]:
    """The flood's events, one list per message; the ceiling COPies the same ones."""
    batches = []
    per_device = events // _DEVICES
    for d in range(_DEVICES):
        for start in range(0, per_device, per_message):
            n = min(per_message, per_device - start)
            batches.append(_events(f"scan{d}", 1, start, n, ts))
    return batches


def _flood_payloads(events: int, per_message: int, ts: datetime) -> list[tuple[str, bytes]]:
    messages = []
    for batch in _flood_batches(events, per_message, ts):
        device = batch[0].device
        payload = encode_batch("LHR1", device, "b", batch)
        messages.append((topics.events("LHR1", device), payload))
    # Interleave devices, as several agents publishing at once would.
    return [messages[i] for k in range(_DEVICES) for i in range(k, len(messages), _DEVICES)]


def _publisher(url: str, mode: str, args: dict[str, Any], ready: Any, go: Any) -> None:
    """The publisher process: flood pre-encoded batches, or publish at a fixed rate."""
    # `url` is the benchmark's own private broker, plain MQTT on a local port: no
    # Settings, no TLS to carry, so not Settings.broker().
    client = MqttClient(f"bench-pub-{os.getpid()}", BrokerAddress.from_url(url), max_inflight=200)
    client.start()
    client.wait_connected(30)
    if mode == "flood":
        payloads = _flood_payloads(args["events"], args["per_message"], args["ts"])
        ready.set()
        go.wait()
        infos = [client.publish(t, p, qos=1) for t, p in payloads]
        for info in infos:
            info.wait_for_publish(600)
    else:
        ready.set()
        go.wait()
        per_message, rate, seconds = args["per_message"], args["rate"], args["seconds"]
        interval = per_message / rate
        infos, seq, started = [], 0, time.monotonic()
        while time.monotonic() - started < seconds:
            due = started + (seq // per_message) * interval
            time.sleep(max(0.0, due - time.monotonic()))
            device = f"scan{(seq // per_message) % _DEVICES}"
            batch = _events(device, 2, seq, per_message, datetime.now(UTC))
            infos.append(
                client.publish(
                    topics.events("LHR1", device), encode_batch("LHR1", device, "b", batch), qos=1
                )
            )
            seq += per_message
        for info in infos:
            info.wait_for_publish(60)
    client.stop()


def _ceiling(
    dsn: str, events: int, per_message: int, ts: datetime, cpu: _CpuMeter | None = None
) -> float:
    """Rows/s of a raw COPY of the flood's rows into `scans` (commit every 50k rows).

    The same binary COPY the ingest uses, so the ratio compares like with like.
    """
    rows = [scan_row(e) for batch in _flood_batches(events, per_message, ts) for e in batch]
    with psycopg.connect(dsn, autocommit=True) as conn:
        day = ts.astimezone(UTC).date()
        lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS scans_{day:%Y%m%d} PARTITION OF scans FOR VALUES "
            f"FROM ('{lower.isoformat()}') TO ('{(lower + timedelta(days=1)).isoformat()}')"
        )
        if cpu is not None:
            cpu.start()
        started = time.perf_counter()
        for i in range(0, len(rows), 50_000):
            with conn.transaction(), conn.cursor() as cur:
                copy_scan_rows(cur, "scans", rows[i : i + 50_000])
        rate = len(rows) / (time.perf_counter() - started)
        if cpu is not None:
            cpu.stop()
        return rate


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


class _CpuMeter:
    """CPU seconds per group of processes between start() and stop(), sampled every
    0.2 s so that a process that ends in between (a backend) still counts up to its
    last sample. Linux only (/proc); elsewhere it measures nothing."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._group_of: dict[int, str] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for name, pids in self._groups.items():
            for pid in pids():
                used = _cpu_of(pid)
                if used is None:
                    continue
                self._first.setdefault(pid, used)
                self._group_of.setdefault(pid, name)
                self._last[pid] = used

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._sample()
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def seconds(self) -> dict[str, float]:
        out = dict.fromkeys(self._groups, 0.0)
        for pid, last in self._last.items():
            out[self._group_of[pid]] += last - self._first[pid]
        return out


def _postgres_pids(pg: PrivatePostgres) -> Callable[[], list[int]]:
    """The postmaster and all its children (backends, WAL writer, checkpointer)."""

    def pids() -> list[int]:
        try:
            postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *_children(postmaster)]

    return pids


def _us_per_event(seconds: dict[str, float], events: int) -> str:
    return ", ".join(f"{k} {v * 1e6 / events:.1f}" for k, v in seconds.items())


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _sum(ports: list[int], key: str) -> float:
    return sum(_metrics(p).get(key, 0.0) for p in ports)


def _histogram(ports: list[int], name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of a histogram summed over the workers."""
    buckets: dict[float, float] = {}
    for port in ports:
        for key, value in _metrics(port).items():
            if key.startswith(f"{name}_bucket"):
                le = key.split('le="')[1].rstrip('"}')
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    return sorted(buckets.items())


def _quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float:
    """Like PromQL's histogram_quantile, over the counts added between two scrapes."""
    old = dict(before)
    cumulative = [(le, count - old.get(le, 0.0)) for le, count in after]
    total = cumulative[-1][1] if cumulative else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower


def _start_workers(
    n: int, dsn: str, url: str, logdir: Path, name: str = "bench-ingest", *options: str
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    procs, ports = [], []
    for i in range(n):
        port = free_port()
        env = dict(os.environ, PARCELTRACK_DSN=dsn, PARCELTRACK_MQTT_URL=url)
        log = (logdir / f"ingest-{i}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "composition.cli", "ingest", "--client-id",
                 f"{name}-{i}", "--metrics-port", str(port), *options],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        ports.append(port)
    deadline = time.monotonic() + 60
    while not all(_metrics(p) for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest workers did not start; see {logdir}")
        time.sleep(0.2)
    time.sleep(1.0)  # subscribed
    return procs, ports


def _flood(
    url: str, flood: dict[str, Any], ports: list[int], cpu: _CpuMeter | None = None
) -> float:
    """Scans/s of one flood: first publish to the last event written."""
    publisher, go = _publish(url, "flood", flood)
    if cpu is not None:
        cpu.start()
    started = time.monotonic()
    go.set()
    finished = _wait_written(ports, flood["events"], 900)
    if cpu is not None:
        cpu.stop()
    publisher.join(60)
    return float(flood["events"] / (finished - started))


@dataclass
class _RatioRound:
    ceiling: float  # rows/s
    rate: float  # scans/s
    load: float  # load average when the round ended
    ceiling_cpu: dict[str, float]  # CPU seconds per process group
    flood_cpu: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.rate / self.ceiling


def _checkpoint(pg: PrivatePostgres) -> None:
    """Write out the dirty pages of what ran before, so that neither phase of a round
    pays for the other's (shared_buffers is shared by the databases)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _ratio_round(
    n: int,
    args: argparse.Namespace,
    pg: PrivatePostgres,
    broker: PrivateMosquitto,
    root: Path,
    flood: dict[str, Any],
    keep: bool,
) -> tuple[_RatioRound, list[subprocess.Popen[bytes]], list[int]]:
    """One ceiling, then one flood of the same events, each into a database of its
    own; the workers are left running when `keep` (for the latency phase)."""
    for db in (f"ceiling_{n}", f"ingest_{n}"):
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db}")
        migrate(pg.dsn(db))
    events, postgres = flood["events"], _postgres_pids(pg)
    me = os.getpid()
    ceiling_cpu = _CpuMeter({"postgres": postgres, "client": lambda: [me]})
    _checkpoint(pg)
    ceiling = _ceiling(pg.dsn(f"ceiling_{n}"), events, args.per_message, flood["ts"], ceiling_cpu)
    _checkpoint(pg)
    procs, ports = _start_workers(args.workers, pg.dsn(f"ingest_{n}"), broker.url, root)
    workers = [p.pid for p in procs]
    assert broker.process is not None
    mosquitto = broker.process.pid
    flood_cpu = _CpuMeter(
        {
            "postgres": postgres,
            "workers": lambda: workers,
            "broker": lambda: [mosquitto],
            "publisher": lambda: [c for c in _children(me) if c not in (*workers, mosquitto)],
        }
    )
    try:
        rate = _flood(broker.url, flood, ports, flood_cpu)
    finally:
        if not keep:
            _stop_workers(procs)
    result = _RatioRound(
        ceiling, rate, os.getloadavg()[0], ceiling_cpu.seconds(), flood_cpu.seconds()
    )
    print(f"  round {n + 1}: ceiling {ceiling:,.0f} rows/s, ingest {rate:,.0f} scans/s, "
          f"ratio {result.ratio:.0%}, load {result.load:.1f}", flush=True)  # fmt: skip
    print(f"    CPU us/event  ceiling: {_us_per_event(result.ceiling_cpu, events)}; "
          f"ingest: {_us_per_event(result.flood_cpu, events)}", flush=True)  # fmt: skip
    return result, (procs if keep else []), (ports if keep else [])


@dataclass
class _Round:
    rate: float  # scans/s, first publish to last event written
    cpu_us: float  # the workers' CPU time per event, microseconds (less load-sensitive)


def _receipt_rounds(
    args: argparse.Namespace, pg: PrivatePostgres, url: str, root: Path, flood: dict[str, Any]
) -> tuple[list[_Round], list[_Round]]:
    """The same flood with commit receipts off, then on, `receipt_rounds` times."""
    rates: dict[bool, list[_Round]] = {True: [], False: []}
    for n in range(args.receipt_rounds):
        for receipts in (False, True):
            db = f"ingest_{n}_{'on' if receipts else 'off'}"
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            migrate(pg.dsn(db))
            options = () if receipts else ("--no-receipts",)
            procs, ports = _start_workers(args.workers, pg.dsn(db), url, root, db, *options)
            try:
                cpu = _sum(ports, "process_cpu_seconds_total")
                rate = _flood(url, flood, ports)
                cpu = _sum(ports, "process_cpu_seconds_total") - cpu
            finally:
                _stop_workers(procs)
            rates[receipts].append(_Round(rate, cpu * 1e6 / flood["events"]))
            print(f"  {db}: {rate:,.0f} scans/s, {cpu:.2f} s worker CPU", flush=True)
    return rates[True], rates[False]


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _publish(url: str, mode: str, args: dict[str, Any]) -> tuple[mp.process.BaseProcess, Any]:
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_publisher, args=(url, mode, args, ready, go))
    proc.start()
    if not ready.wait(600):
        raise RuntimeError("the publisher did not get ready")
    return proc, go


def _wait_written(ports: list[int], target: float, timeout: float) -> float:
    key = 'parceltrack_ingest_events_total{outcome="written"}'
    deadline = time.monotonic() + timeout
    while (written := _sum(ports, key)) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {written:.0f} of {target:.0f} events written in time")
        time.sleep(0.05)
    return time.monotonic()


def _validation_us(per_message: int, ts: datetime) -> tuple[float, float]:
    """Microseconds per event to validate one flood message: the pydantic model alone
    (the ingest before issue 17) and `decode_batch` (fast lane, then the event checks)."""
    payload = _flood_payloads(per_message * _DEVICES, per_message, ts)[0][1]
    topic, now = topics.events("LHR1", "scan0"), datetime.now(UTC)
    lanes: dict[str, Callable[[], object]] = {
        "model": lambda: wire.ScanBatch.model_validate_json(payload),
        "fast": lambda: wire.decode_batch(topic, payload, now),
    }
    best = {}
    for name, validate in lanes.items():
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20):
                validate()
            runs.append((time.perf_counter() - started) / (20 * per_message) * 1e6)
        best[name] = min(runs)
    return best["model"], best["fast"]


def run(args: argparse.Namespace) -> int:
    root = Path(args.workdir).absolute() / f"run-{os.getpid()}"
    pg = PrivatePostgres(root / "postgres", fast=False)  # durable, as in production
    broker = PrivateMosquitto(root / "mosquitto")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        broker.start()
        ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        events = args.events - args.events % (_DEVICES * args.per_message)
        flood = {"events": events, "per_message": args.per_message, "ts": ts}

        print(f"{args.rounds} rounds: raw COPY of {events} rows into scans, then the "
              f"same events through the ingest ({args.workers} workers)", flush=True)  # fmt: skip
        rounds: list[_RatioRound] = []
        for n in range(args.rounds):
            result, procs, ports = _ratio_round(
                n, args, pg, broker, root, flood, keep=n == args.rounds - 1
            )
            rounds.append(result)
        ceiling = statistics.median(r.ceiling for r in rounds)
        rate = statistics.median(r.rate for r in rounds)
        ratio = statistics.median(r.ratio for r in rounds)

        name = "parceltrack_ingest_read_to_commit_seconds"
        before = _histogram(ports, name)
        steady = {
            "per_message": args.per_message,
            "rate": args.rate,
            "seconds": args.latency_seconds,
        }
        print(
            f"publishing {args.rate:,.0f} scans/s for {args.latency_seconds:.0f}s ...", flush=True
        )
        publisher, go = _publish(broker.url, "rate", steady)
        go.set()
        publisher.join(args.latency_seconds + 120)
        expected = (
            events + int(args.rate * args.latency_seconds) // args.per_message * args.per_message
        )
        _wait_written(ports, expected * 0.99, 120)
        time.sleep(1.0)
        after = _histogram(ports, name)
        p50, p95, p99 = (_quantile(q, before, after) for q in (0.5, 0.95, 0.99))

        # Receipts on and off (issue 13), alternating rounds on databases of their own,
        # so a load change of the shared machine hits both alike; the workers above
        # are stopped first (they share the subscription group).
        _stop_workers(procs)
        procs = []
        with_receipts, without = _receipt_rounds(args, pg, broker.url, root, flood)
        on, off = (statistics.median(r.rate for r in rs) for rs in (with_receipts, without))
        cpu_on, cpu_off = (
            statistics.median(r.cpu_us for r in rs) for rs in (with_receipts, without)
        )

        load = os.getloadavg()
        print()
        print(
            f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} (shared with other work)"
        )
        print(f"raw COPY ceiling          {ceiling:>10,.0f} rows/s  (median of {args.rounds})")
        print(f"end-to-end ingest         {rate:>10,.0f} scans/s  ({args.workers} workers, "
              f"{args.per_message} events/message; median of {args.rounds})")  # fmt: skip
        print(f"ratio to the ceiling      {ratio:>10.0%}  (median of the rounds' ratios: "
              + ", ".join(f"{r.ratio:.0%}" for r in rounds) + ")")  # fmt: skip
        cpu_ceiling = {k: statistics.median(r.ceiling_cpu[k] for r in rounds)
                       for k in rounds[0].ceiling_cpu}  # fmt: skip
        cpu_flood = {k: statistics.median(r.flood_cpu[k] for r in rounds)
                     for k in rounds[0].flood_cpu}  # fmt: skip
        print(f"CPU per event, us         ceiling: {_us_per_event(cpu_ceiling, events)} "
              f"(client: the bench COPYing rows)")  # fmt: skip
        print(f"                          ingest: {_us_per_event(cpu_flood, events)}")
        model_us, fast_us = _validation_us(args.per_message, ts)
        print(f"validation per event      {fast_us:>10.2f} us  (pydantic model alone "
              f"{model_us:.2f} us: {model_us / fast_us:.1f}x)")  # fmt: skip
        print(f"receipts on / off         {on:>10,.0f} / {off:,.0f} scans/s, median of "
              f"{args.receipt_rounds} alternating floods each; throughput cost "
              f"{1 - on / off:.1%} (goal <= 5%)")  # fmt: skip
        print(f"  worker CPU per event      {cpu_on:.1f} / {cpu_off:.1f} us; CPU cost "
              f"{cpu_on / cpu_off - 1:.1%} (goal <= 5%)")  # fmt: skip
        for label, rs in (("on", with_receipts), ("off", without)):
            print(
                f"  rounds {label:3s} "
                + ", ".join(f"{r.rate:,.0f}/s {r.cpu_us:.1f} us" for r in rs)
            )
        print(f"publish-to-commit at {args.rate:,.0f}/s: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")  # fmt: skip
        goals = [
            (f"sustained >= {GOAL_RATE:,.0f} scans/s", rate >= GOAL_RATE),
            (f"ratio >= {GOAL_RATIO:.0%} of the ceiling", ratio >= GOAL_RATIO),
            (f"p99 < {GOAL_P99_S:.0f} s at {args.rate:,.0f}/s", p99 < GOAL_P99_S),
        ]
        for goal, met in goals:
            print(f"  {'met' if met else 'NOT met'}: {goal}")
        return 0
    finally:
        _stop_workers(procs)
        broker.destroy()
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)

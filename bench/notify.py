"""Notifications: scan -> webhook and alert -> webhook latency under load, beside the
delivery engine's own floor (enqueue -> webhook) measured in the same run.

A private PostgreSQL, a real `parceltrack notify` process and a local webhook
receiver. For `--seconds`, this process writes scans of `--parcels` parcels (a
share of them subscribed) at `--scan-rate`, moving each parcel induction -> sort ->
dispatch, opens alerts on subscribed parcels at `--alert-rate` (half of them resolved
within the hold-down, so they must produce nothing), and queues `--direct-rate`
webhooks straight into the outbound queue: the baseline, what delivery costs without
the notifier. Latency = receiver's clock - the scan's time, the alert's opening, or
the enqueue (one machine, one clock). The alert -> notification figure includes the
hold-down by design; add the detector's own scan -> alert latency (`bench` of the
detection path) for the full scan -> alert -> customer path.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

import psycopg

from composition.pipeline import create_database
from composition.services import PrivatePostgres
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from parceltrack.layout import Stage, Zone
from storage import model
from storage.migrations import has_timescale, migrate
from storage.outbound import Outbound, Webhook, enqueue
from storage.reference import load_layout

SITE = "PVG1"
ROUTE = (("IND1", Zone.INDUCTION, Stage.INDUCTION), ("SRT1", Zone.SORTER, Stage.SORT),
         ("DOR1", Zone.DOOR, Stage.DISPATCH))  # fmt: skip
GOAL_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the load")
    parser.add_argument("--parcels", type=int, default=3000, help="parcels moving")
    parser.add_argument("--subscribed", type=float, default=0.2, help="share subscribed")
    parser.add_argument("--scan-rate", type=float, default=600.0, help="scans/s written")
    parser.add_argument("--alert-rate", type=float, default=4.0, help="alerts/s opened")
    parser.add_argument("--direct-rate", type=float, default=20.0, help="baseline webhooks/s")
    parser.add_argument("--hold-down", type=float, default=2.0, help="notify --hold-down")
    parser.add_argument("--workdir", default=".local", help="where the private server lives")


def _receive(port_out: Connection, log_path: str) -> None:
    """The receiver process: answers 200, appends "<arrival> <body>" lines to a file."""
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrived = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with lock:
                log.write(f"{arrived} {body.decode()}\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.send(server.server_address[1])
    server.serve_forever()


class Receiver:
    """A webhook receiver in a process of its own, so the load this process makes
    does not delay its answers or its clock readings."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "received.log"
        self.path.touch()
        ours, theirs = mp.Pipe()
        self.process = mp.get_context("spawn").Process(
            target=_receive, args=(theirs, str(self.path)), daemon=True
        )
        self.process.start()
        self.url = f"http://127.0.0.1:{ours.recv()}/hook"

    def got(self) -> list[tuple[float, dict[str, object]]]:
        lines = self.path.read_text().splitlines()
        return [(float(a), json.loads(b)) for a, _, b in (line.partition(" ") for line in lines)]

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def _parcels(n: int) -> list[str]:
    return [str(S10.make("CA", 10_000_000 + i, "CN")) for i in range(n)]


def _setup(dsn: str, parcels: list[str], subscribed: list[str], url: str) -> None:
    data = model.ReferenceData(
        sites=(model.Site(SITE, "Shanghai hub", "Asia/Shanghai"),),
        read_points=tuple(
            model.ReadPoint(f"{SITE}-{rp}", SITE, zone, stage, position=i)
            for i, (rp, zone, stage) in enumerate(ROUTE)
        ),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_layout(conn, data)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site) "
                "VALUES (%s, 'express', 'SHA', %s)",
                [(p, SITE) for p in parcels],
            )
            cur.executemany(
                "INSERT INTO customer_subscriptions (tracking_id, channel, target, language, "
                "secret, unsubscribe_token) VALUES (%s, 'webhook', %s, 'zh-CN', 'k', %s)",
                [(p, url, f"bench-{p}") for p in subscribed],
            )


def _load(dsn: str, args: argparse.Namespace, parcels: list[str], subscribed: list[str],
          url: str) -> dict[str, int]:  # fmt: skip
    """Write the scans, alerts and direct messages for args.seconds; what was expected."""
    expected = {"scan": 0, "alert": 0, "direct": 0}
    watched = set(subscribed)
    step = 0.1
    seq, cursor = 0, 0
    stage_of = dict.fromkeys(parcels, -1)
    alerts_owed, direct_owed = 0.0, 0.0
    fast_alerts: list[tuple[int, float]] = []
    started = time.monotonic()
    # Autocommit: each block below is its own short transaction, as the ingest's are.
    with psycopg.connect(dsn, autocommit=True) as conn:
        partitions = ScanPartitions(has_timescale(conn))
        while (elapsed := time.monotonic() - started) < args.seconds:
            now = datetime.now(UTC)
            events = []
            for _ in range(int(args.scan_rate * step)):
                parcel = parcels[cursor % len(parcels)]
                cursor += 1
                stage = stage_of[parcel] + 1
                if stage >= len(ROUTE):
                    continue
                stage_of[parcel] = stage
                seq += 1
                rp = f"{SITE}-{ROUTE[stage][0]}"
                events.append(ScanEvent(device=f"{rp}-dev", boot=1, seq=seq, ts=now, site=SITE,
                                        read_point=rp, kind=EventKind.READ, code=parcel,
                                        tracking_id=parcel))  # fmt: skip
                expected["scan"] += parcel in watched
            with conn.transaction():
                write_scans(conn, events, partitions)
            alerts_owed += args.alert_rate * step
            while alerts_owed >= 1 and subscribed:
                alerts_owed -= 1
                parcel = subscribed[(seq * 7919) % len(subscribed)]
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO alerts (fingerprint, kind, site_id, tracking_id) "
                        "VALUES (%s, 'delay', %s, %s) ON CONFLICT DO NOTHING RETURNING alert_id",
                        (f"bench:{seq}:{parcel}", SITE, parcel),
                    ).fetchone()
                seq += 1
                if row is None:
                    continue
                if len(fast_alerts) < expected["alert"]:  # every other: within the hold-down
                    fast_alerts.append((int(row[0]), time.monotonic()))
                else:
                    expected["alert"] += 1
            for alert_id, opened in list(fast_alerts):
                if time.monotonic() - opened > args.hold_down / 3:
                    conn.execute(
                        "UPDATE alerts SET state = 'resolved', resolved_at = now() "
                        "WHERE alert_id = %s",
                        (alert_id,),
                    )
                    fast_alerts.remove((alert_id, opened))
                    fast_alerts.append((alert_id, float("inf")))
            direct_owed += args.direct_rate * step
            with conn.transaction():
                while direct_owed >= 1:
                    direct_owed -= 1
                    expected["direct"] += 1
                    body = {"event": "direct", "queued_at": time.time()}
                    enqueue(conn, Outbound(url, "bench:direct", f"d{expected['direct']}",
                                           "bench.direct", Webhook(body, "k")))  # fmt: skip
            time.sleep(max(0.0, started + elapsed + step - time.monotonic()))
    return expected


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a (fewer than 2 samples)"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49] * 1000:7.0f} ms  p95 {q[94] * 1000:7.0f} ms  p99 {q[98] * 1000:7.0f} ms"


def run(args: argparse.Namespace) -> int:
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-notify-", dir=root))
    workdir.chmod(0o755)  # PostgreSQL may run as another user (root is refused)
    server = PrivatePostgres(workdir / "postgres", fast=False)
    server.start()
    receiver = Receiver(workdir)
    notify: subprocess.Popen[bytes] | None = None
    try:
        create_database(server.dsn(), "bench")
        dsn = server.dsn("bench")
        migrate(dsn)
        parcels = _parcels(args.parcels)
        subscribed = parcels[:: max(1, round(1 / args.subscribed))] if args.subscribed else []
        _setup(dsn, parcels, subscribed, receiver.url)
        log = (workdir / "notify.log").open("wb")
        notify = subprocess.Popen(
            [sys.executable, "-m", "composition.cli", "notify", "--hold-down",
             str(args.hold_down), "--rate", "1000000", "--allow-private-targets"],
            env={**os.environ, "PARCELTRACK_DSN": dsn}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(2.0)  # the notifier's cursor starts at its first round
        print(f"load: {args.scan_rate:,.0f} scans/s over {args.parcels} parcels "
              f"({len(subscribed)} subscribed), {args.alert_rate:g} alerts/s, "
              f"{args.direct_rate:g} direct webhooks/s, for {args.seconds:g} s ...",
              flush=True)  # fmt: skip
        load_before = os.getloadavg()
        expected = _load(dsn, args, parcels, subscribed, receiver.url)
        load_after = os.getloadavg()
        total = sum(expected.values())
        deadline = time.monotonic() + args.hold_down + 30
        while len(receiver.got()) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(args.hold_down + 1.0)  # anything more (a suppressed alert) would show
        with psycopg.connect(dsn) as conn:
            # What the rule owes: alerts still open hold-down seconds after opening (a
            # loaded machine can resolve a "fast" one late; then it is owed).
            owed = conn.execute(
                "SELECT count(*) FROM alerts WHERE resolved_at IS NULL "
                "OR resolved_at - opened_at > make_interval(secs => %s)",
                (args.hold_down,),
            ).fetchone()
        expected["alert"] = int(owed[0]) if owed else 0
        latency: dict[str, list[float]] = {"scan": [], "alert": [], "direct": []}
        for arrived, body in receiver.got():
            if body["event"] == "direct":
                latency["direct"].append(arrived - float(str(body["queued_at"])))
            else:
                kind = "alert" if body["event"] == "delayed" else "scan"
                at = datetime.fromisoformat(str(body["occurred_at"])).timestamp()
                latency[kind].append(arrived - at)
        print()
        print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after the load (shared with other work)")  # fmt: skip
        rows = (
            ("baseline: enqueue -> webhook", "direct"),
            ("scan -> notification", "scan"),
            (f"alert -> notification (hold-down {args.hold_down:g} s)", "alert"),
        )
        for label, key in rows:
            got = len(latency[key])
            print(f"{label:<42} {got:>6}/{expected[key]:<6} {_quantiles(latency[key])}")
        worst = max((max(v) for v in latency.values() if v), default=float("nan"))
        keys = [str(b["idempotency_key"]) for _, b in receiver.got() if "idempotency_key" in b]
        repeats = len(keys) - len(set(keys))
        complete = repeats == 0 and all(len(latency[k]) == expected[k] for k in expected)
        print(f"  {'met' if complete else 'NOT met'}: every notification delivered once "
              f"(suppressed alerts produced none; {repeats} repeats)")  # fmt: skip
        print(f"  {'met' if worst < GOAL_S else 'NOT met'}: every one within {GOAL_S:g} s "
              f"of its cause (worst {worst:.2f} s)")  # fmt: skip
        return 0
    finally:
        if notify is not None:
            notify.send_signal(signal.SIGTERM)
            try:
                notify.wait(20)
            except subprocess.TimeoutExpired:
                notify.kill()
        receiver.stop()
        server.stop()
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

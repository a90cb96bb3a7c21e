"""Notifications: scan -> webhook and alert -> webhook latency under load, beside the
alert latency (fault detectable -> alert row) and the delivery engine's own floor
(enqueue -> webhook), all measured in the same run.

A private PostgreSQL, real `parceltrack notify` and `parceltrack detect` processes
and a local webhook receiver. For `--seconds`, this process writes scans of
`--parcels` parcels (a share of them subscribed) at `--scan-rate`, moving each parcel
induction -> sort -> dispatch. `--faults` subscribed parcels (a service class whose
induction standard is `--standard`) stop after induction: the detector opens a delay
alert for each once it becomes detectable (induction + standard + its 1 s clock
tolerance), and the notifier tells it after the hold-down. Apart from those, alerts
are inserted at `--alert-rate` on subscribed parcels that are never scanned (so the
detector leaves them alone), half of them resolved within the hold-down: they must
produce nothing. `--direct-rate` webhooks go straight into the outbound queue: the
baseline, what delivery costs without the notifier.

Clock readings (one machine, one clock): the receiver's arrival; a scan's time; an
inserted alert's opening; a detector alert's commit, seen by LISTEN on the alert
trigger's channel; the enqueue. The alert -> notification figures include the
hold-down by design (an alert is told only if it is still open then).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

import psycopg

from composition.pipeline import create_database
from composition.services import PrivatePostgres, end_process
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from parceltrack.layout import Stage, Zone
from storage import model
from storage.migrations import has_timescale, migrate
from storage.outbound import Outbound, Webhook, enqueue
from storage.reference import load_layout, load_standards

SITE = "PVG1"
ROUTE = (("IND1", Zone.INDUCTION, Stage.INDUCTION), ("SRT1", Zone.SORTER, Stage.SORT),
         ("DOR1", Zone.DOOR, Stage.DISPATCH))  # fmt: skip
GOAL_S = 5.0
NORMAL, STUCK = "express", "bench-stuck"  # service classes: moving parcels, faulty ones
SKEW_TOLERANCE_S = 1.0  # the detector's default (`parceltrack detect --skew-tolerance`)
ALERT_CHANNEL = "parceltrack_alerts"  # migration 4's trigger notifies each change's id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the load")
    parser.add_argument("--parcels", type=int, default=3000, help="parcels moving")
    parser.add_argument("--subscribed", type=float, default=0.2, help="share subscribed")
    parser.add_argument("--scan-rate", type=float, default=600.0, help="scans/s written")
    parser.add_argument("--alert-rate", type=float, default=4.0, help="alerts/s inserted")
    parser.add_argument("--faults", type=int, default=40, help="subscribed parcels that stop")
    parser.add_argument("--standard", type=float, default=3.0, help="their induction standard")
    parser.add_argument("--tick", type=float, default=0.5, help="detector tick (s)")
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

    class Server(ThreadingHTTPServer):
        # The default listen backlog (5) overflows when the engine's 8 workers connect
        # at once (HTTP/1.0: a connection per webhook): a dropped SYN is resent after
        # 1 s, a delay of this receiver, not of the notifier.
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
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


@dataclass(frozen=True, slots=True)
class Plan:
    """Which parcels do what in the run."""

    moving: list[str]  # scanned through the route (unless stuck)
    subscribed: list[str]  # of `moving`
    stuck: set[str]  # of `subscribed`: read at induction only, the detector alerts them
    alert_only: list[str]  # subscribed, never scanned: the inserted alerts are theirs

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        every = _parcels(args.parcels + 200)
        moving, alert_only = every[: args.parcels], every[args.parcels :]
        subscribed = moving[:: max(1, round(1 / args.subscribed))] if args.subscribed else []
        spread = max(1, len(subscribed) // max(1, args.faults))
        stuck = set(subscribed[::spread][: args.faults]) if args.faults else set()
        return cls(moving, subscribed, stuck, alert_only)


def _setup(dsn: str, plan: Plan, standard_s: float, url: str) -> None:
    data = model.ReferenceData(
        sites=(model.Site(SITE, "Shanghai hub", "Asia/Shanghai"),),
        read_points=tuple(
            model.ReadPoint(
                f"{SITE}-{rp}", SITE, zone, stage, position=i,
                next_read_point_id=f"{SITE}-{ROUTE[i + 1][0]}" if i + 1 < len(ROUTE) else None,
            )
            for i, (rp, zone, stage) in enumerate(ROUTE)
        ),
        service_classes=(model.ServiceClass(NORMAL, "", 2), model.ServiceClass(STUCK, "", 2)),
        # Moving parcels take seconds per stage: an hour's standard never alerts them.
        stage_standards=tuple(
            model.StageStandard(SITE, stage, cls, standard_s
                                if (cls, stage) == (STUCK, Stage.INDUCTION) else 3600.0)
            for cls in (NORMAL, STUCK) for _, _, stage in ROUTE
        ),
    )  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_layout(conn, data)
        load_standards(conn, data)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site) "
                "VALUES (%s, %s, 'SHA', %s)",
                [(p, STUCK if p in plan.stuck else NORMAL, SITE)
                 for p in plan.moving + plan.alert_only],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO customer_subscriptions (tracking_id, channel, target, language, "
                "secret, unsubscribe_token) VALUES (%s, 'webhook', %s, 'zh-CN', 'k', %s)",
                [(p, url, f"bench-{p}") for p in plan.subscribed + plan.alert_only],
            )


class AlertCommits(threading.Thread):
    """Timestamps each alert change as it commits (the trigger's NOTIFY is delivered at
    commit): when the detector's alert row became visible."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.seen: dict[int, float] = {}  # event id -> epoch seconds
        self.listening = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"LISTEN {ALERT_CHANNEL}")
            self.listening.set()
            while not self.stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    self.seen[int(note.payload)] = time.time()


def _load(
    dsn: str, args: argparse.Namespace, plan: Plan, url: str
) -> tuple[dict[str, int], dict[str, float]]:
    """Write the scans, alerts and direct messages for args.seconds; what was expected,
    and when each stuck parcel's delay became detectable (epoch seconds)."""
    expected = {"scan": 0, "alert": 0, "direct": 0}
    detectable: dict[str, float] = {}
    watched = set(plan.subscribed)
    step = 0.1
    seq, cursor = 0, 0
    stage_of = dict.fromkeys(plan.moving, -1)
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
                parcel = plan.moving[cursor % len(plan.moving)]
                cursor += 1
                stage = stage_of[parcel] + 1
                if stage >= len(ROUTE) or (stage > 0 and parcel in plan.stuck):
                    continue
                stage_of[parcel] = stage
                seq += 1
                rp = f"{SITE}-{ROUTE[stage][0]}"
                events.append(ScanEvent(device=f"{rp}-dev", boot=1, seq=seq, ts=now, site=SITE,
                                        read_point=rp, kind=EventKind.READ, code=parcel,
                                        tracking_id=parcel))  # fmt: skip
                expected["scan"] += parcel in watched
                if parcel in plan.stuck:
                    detectable[parcel] = now.timestamp() + args.standard + SKEW_TOLERANCE_S
            with conn.transaction():
                write_scans(conn, events, partitions)
            alerts_owed += args.alert_rate * step
            while alerts_owed >= 1 and plan.alert_only:
                alerts_owed -= 1
                parcel = plan.alert_only[(seq * 7919) % len(plan.alert_only)]
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
    return expected, detectable


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a (fewer than 2 samples)"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return (f"p50 {q[49] * 1000:6.0f} ms  p95 {q[94] * 1000:6.0f} ms  "
            f"p99 {q[98] * 1000:6.0f} ms  max {max(values) * 1000:6.0f} ms")  # fmt: skip


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "composition.cli", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_for_lines(log: Path, needles: tuple[str, ...], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(n in log.read_text(errors="replace") for n in needles):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the processes did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _detector_alerts(dsn: str, stuck: set[str], commits: AlertCommits) -> dict[str, float]:
    """When each stuck parcel's first delay alert committed (epoch seconds)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (a.tracking_id) a.tracking_id, e.event_id FROM alert_events e "
            "JOIN alerts a USING (alert_id) WHERE e.change = 'opened' AND a.kind = 'delay' "
            "AND a.tracking_id = ANY(%s) ORDER BY a.tracking_id, e.event_id",
            (sorted(stuck),),
        ).fetchall()
    return {str(t): commits.seen[int(e)] for t, e in rows if int(e) in commits.seen}


def run(args: argparse.Namespace) -> int:
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-notify-", dir=root))
    workdir.chmod(0o755)  # PostgreSQL may run as another user (root is refused)
    server = PrivatePostgres(workdir / "postgres", fast=False)
    server.start()
    receiver = Receiver(workdir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        create_database(server.dsn(), "bench")
        dsn = server.dsn("bench")
        migrate(dsn)
        plan = Plan.of(args)
        _setup(dsn, plan, args.standard, receiver.url)
        env = {**os.environ, "PARCELTRACK_DSN": dsn}
        log = workdir / "processes.log"
        procs.append(_spawn(env, log, "notify", "--hold-down", str(args.hold_down), "--rate",
                            "1000000", "--allow-private-targets"))  # fmt: skip
        procs.append(_spawn(env, log, "detect", "--tick", str(args.tick), "--no-mqtt",
                            "--missing-after", "3600"))  # fmt: skip
        commits = AlertCommits(dsn)
        commits.start()
        commits.listening.wait(10)
        # Started on a loaded machine, the processes can take seconds to import: what
        # happened before the notifier's cursor exists is, by design, never told.
        _wait_for_lines(log, ("notifier running", "delivery engine running", "rebuilt state"))
        print(f"load: {args.scan_rate:,.0f} scans/s over {args.parcels} parcels "
              f"({len(plan.subscribed)} subscribed, {len(plan.stuck)} of them stuck), "
              f"{args.alert_rate:g} alerts/s inserted, {args.direct_rate:g} direct webhooks/s, "
              f"for {args.seconds:g} s ...", flush=True)  # fmt: skip
        load_before = os.getloadavg()
        expected, detectable = _load(dsn, args, plan, receiver.url)
        load_after = os.getloadavg()
        expected["detected"] = len(plan.stuck)
        total = sum(expected.values())
        deadline = time.monotonic() + args.standard + args.hold_down + 30
        while len(receiver.got()) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(args.hold_down + 1.0)  # anything more (a suppressed alert) would show
        commits.stop.set()
        with psycopg.connect(dsn) as conn:
            # What the rule owes: inserted alerts still open hold-down seconds after
            # opening (a loaded machine can resolve a "fast" one late; then it is owed).
            # Its resolution is owed too when that came later (told: delayed, resolved).
            owed = conn.execute(
                "SELECT count(*) + count(resolved_at) FROM alerts WHERE fingerprint LIKE "
                "'bench:%%' AND (resolved_at IS NULL "
                "OR resolved_at - opened_at > make_interval(secs => %s))",
                (args.hold_down,),
            ).fetchone()
        expected["alert"] = int(owed[0]) if owed else 0
        alerted = _detector_alerts(dsn, plan.stuck, commits)
        kinds = ("direct", "scan", "alert", "detected", "full")
        latency: dict[str, list[float]] = {k: [] for k in kinds}
        for arrived, body in receiver.got():
            parcel = str(body.get("tracking_id", ""))
            if body["event"] == "direct":
                latency["direct"].append(arrived - float(str(body["queued_at"])))
            elif body["event"] == "delayed" and parcel in plan.stuck:
                if parcel in alerted:
                    latency["detected"].append(arrived - alerted[parcel])
                latency["full"].append(arrived - detectable[parcel])
            elif body["event"] in ("delayed", "resolved"):  # an inserted alert's
                at = datetime.fromisoformat(str(body["occurred_at"])).timestamp()
                latency["alert"].append(arrived - at)
            else:
                at = datetime.fromisoformat(str(body["occurred_at"])).timestamp()
                latency["scan"].append(arrived - at)
        detection = [alerted[p] - d for p, d in detectable.items() if p in alerted]
        _report(args, expected, latency, detection, (load_before[0], load_after[0]))
        keys = [str(b["idempotency_key"]) for _, b in receiver.got() if "idempotency_key" in b]
        repeats = len(keys) - len(set(keys))
        counted = {k: len(v) for k, v in latency.items()}
        complete = repeats == 0 and all(
            counted[k] == expected[k] for k in ("direct", "scan", "alert", "detected")
        )
        told = [*latency["scan"], *latency["alert"], *latency["detected"]]
        worst = max(told, default=float("nan"))
        print(f"  {'met' if complete else 'NOT met'}: every notification delivered once "
              f"(suppressed alerts produced none; {repeats} repeats)")  # fmt: skip
        print(f"  {'met' if worst < GOAL_S else 'NOT met'}: every one within {GOAL_S:g} s "
              f"of its scan or alert (worst {worst:.2f} s)")  # fmt: skip
        for proc in procs:
            end_process(proc, 20)
        trouble = [line for line in log.read_text(errors="replace").splitlines()
                   if "ERROR" in line or "WARNING" in line]  # fmt: skip
        for line in trouble[:20]:
            print("processes' log:", line)
        if not complete:
            kept = root / "bench-notify-processes.log"
            shutil.copy(log, kept)
            print(f"the processes' log is kept in {kept}")
        return 0
    finally:
        for proc in procs:
            end_process(proc, 20)
        receiver.stop()
        server.stop()
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def _report(
    args: argparse.Namespace,
    expected: dict[str, int],
    latency: dict[str, list[float]],
    detection: list[float],
    loads: tuple[float, float],
) -> None:
    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {loads[0]:.1f} before, "
          f"{loads[1]:.1f} after the load (shared with other work)")  # fmt: skip
    hold = f"hold-down {args.hold_down:g} s"
    rows = (
        ("baseline: enqueue -> webhook", latency["direct"], expected["direct"]),
        ("scan -> notification", latency["scan"], expected["scan"]),
        (f"alert change -> notification ({hold})", latency["alert"], expected["alert"]),
        (f"alert latency: detectable -> alert row (tick {args.tick:g} s)", detection,
         expected["detected"]),
        (f"detector's alert -> notification ({hold})", latency["detected"], expected["detected"]),
        ("  whole path: detectable -> notification", latency["full"], expected["detected"]),
    )  # fmt: skip
    for label, values, owed in rows:
        print(f"{label:<50} {len(values):>5}/{owed:<5} {_quantiles(values)}")

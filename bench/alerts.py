"""Alert latency end to end: a fault becomes detectable -> the alert on the API's SSE stream.

A private PostgreSQL and Mosquitto; real `parceltrack ingest`, `detect` and `api`
processes; a publisher sending scan batches over MQTT at --rate scans/s from 8
devices of one site: each parcel is read at induction, and a second later at the
outbound door (the site's last stage). A fraction of parcels (--fault-rate) is never
read again: each becomes detectable as delayed at its induction read + the stage
standard (--standard) + the detector's clock tolerance (1 s), the rule of
docs/architecture.md. A client follows `GET /v1/alerts/stream` and timestamps each
alert.opened; latency = received - detectable.

Baseline in the same run: alerts inserted straight into the database, each
timestamped, and received on the same stream (what the API's stream itself costs),
and the detector's tick (a tick-driven check cannot beat half a tick on average).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.security import key_hash, new_key
from bench.api import percentile
from composition.services import (
    PrivateMosquitto,
    PrivatePostgres,
    end_process,
    free_port,
    wait_for_port,
)
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from parceltrack.layout import Stage, Zone
from parceltrack.mqtt import MqttClient
from parceltrack.wire import encode_batch
from storage import model
from storage.migrations import migrate
from storage.reference import load_layout, load_standards

SITE = "ALT1"
INDUCTION, DOOR = f"{SITE}-IND1", f"{SITE}-DOR1"
DEVICES = 4  # per read point
SKEW_TOLERANCE_S = 1.0  # the detector's default (`parceltrack detect --skew-tolerance`)
GOAL_P99_S = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=10_000.0, help="scans/s published")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--fault-rate", type=float, default=0.005, help="parcels never read again")
    parser.add_argument("--standard", type=float, default=3.0, help="induction standard (s)")
    parser.add_argument("--tick", type=float, default=0.5, help="detector tick (s)")
    parser.add_argument("--ingest-workers", type=int, default=2)
    parser.add_argument(
        "--eta-inline",
        action="store_true",
        help="the detector writes parcel_eta on its tick thread, as before issue 17",
    )
    parser.add_argument("--workdir", default=".local/bench-alerts", help="private services")


def _prepare(dsn: str, standard_s: float) -> str:
    """Layout, class and standards; returns a controller key for the stream."""
    data = model.ReferenceData(
        sites=(model.Site(SITE, "Alert bench centre"),),
        read_points=(
            model.ReadPoint(INDUCTION, SITE, Zone.INDUCTION, Stage.INDUCTION, "Induction", 1, DOOR),
            model.ReadPoint(DOOR, SITE, Zone.DOOR, Stage.DISPATCH, "Outbound door", 2, None),
        ),
        service_classes=(model.ServiceClass("standard", "", 2),),
        stage_standards=(
            model.StageStandard(SITE, Stage.INDUCTION, "standard", standard_s),
            model.StageStandard(SITE, Stage.DISPATCH, "standard", 3600.0),
        ),
    )  # fmt: skip
    key = new_key()
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_layout(conn, data)
        load_standards(conn, data)
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, name, role) VALUES (%s, %s, 'bench', "
            "'controller')",
            (key_hash(key), key[:7]),
        )
    return key


class StreamFollower(threading.Thread):
    """Reads the SSE stream; records (received at, alert) of every alert.opened."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.opened: list[tuple[float, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
            http.stream("GET", self.url, headers=headers) as response,
        ):
            self.connected.set()
            event = ""
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alert.opened":
                    self.opened.append((time.time(), json.loads(line[6:])["alert"]))


def _batches(rp: str, ids: list[str], at: datetime, boot: int, seq: int) -> list[tuple[str, bytes]]:
    """One wire batch per device of the read point (parcels spread over its devices)."""
    messages = []
    for d in range(DEVICES):
        mine = ids[d::DEVICES]
        if not mine:
            continue
        device = f"{rp}-dev{d}"
        events = []
        for tracking in mine:
            seq += 1
            events.append(
                ScanEvent(
                    device=device, boot=boot, seq=seq, ts=at, site=SITE, read_point=rp,
                    kind=EventKind.READ, code=tracking, symbology="]C0", tracking_id=tracking,
                )
            )  # fmt: skip
        messages.append((topics.events(SITE, device), encode_batch(SITE, device, "b", events)))
    return messages


def _publish(client: MqttClient, args: argparse.Namespace) -> tuple[dict[str, float], int]:
    """Publish for args.seconds; returns each faulty parcel's detectable time (epoch
    seconds) and the number of scans published."""
    tick = 0.05
    parcels_per_tick = max(1, round(args.rate * tick / (2 - args.fault_rate)))
    every = max(1, round(1 / args.fault_rate))
    pending: list[tuple[float, list[str]]] = []  # healthy parcels waiting for the door
    detectable: dict[str, float] = {}
    serial, seq, scans, started = 1, 0, 0, time.time()
    boot, ticks = int(started), 0
    while (now := time.time()) - started < args.seconds:
        fresh = [str(S10.make("CP", serial + i, "GB")) for i in range(parcels_per_tick)]
        healthy = []
        for i, tracking in enumerate(fresh):
            if (serial + i) % every == 0:
                detectable[tracking] = now + args.standard + SKEW_TOLERANCE_S
            else:
                healthy.append(tracking)
        serial += parcels_per_tick
        door: list[str] = []
        while pending and pending[0][0] <= now - 1.0:
            door += pending.pop(0)[1]
        pending.append((now, healthy))
        at = datetime.fromtimestamp(now, UTC)
        for rp, ids in ((INDUCTION, fresh), (DOOR, door)):
            for topic, payload in _batches(rp, ids, at, boot, seq):
                client.publish(topic, payload, qos=1)
            seq += len(ids)
            scans += len(ids)
        ticks += 1
        time.sleep(max(0.0, started + ticks * tick - time.time()))
    # The healthy parcels still on their way reach the door too: no false delays.
    for due, ids in pending:
        time.sleep(max(0.0, due + 1.0 - time.time()))
        at = datetime.now(UTC)
        for topic, payload in _batches(DOOR, ids, at, boot, seq):
            client.publish(topic, payload, qos=1)
        seq += len(ids)
        scans += len(ids)
    return detectable, scans


def _stream_baseline(dsn: str, follower: StreamFollower, n: int = 40) -> list[float]:
    """Seconds from an alert row's INSERT to its alert.opened on the stream."""
    inserted: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            fingerprint = f"bench:{i}"
            inserted[fingerprint] = time.time()
            conn.execute(
                "INSERT INTO alerts (fingerprint, kind, site_id, device_id) "
                "VALUES (%s, 'silence', %s, %s)",
                (fingerprint, SITE, f"bench-{i}"),
            )
            time.sleep(0.05)
    deadline = time.time() + 10
    while time.time() < deadline:
        got = {a["fingerprint"]: at for at, a in follower.opened if a["fingerprint"] in inserted}
        if len(got) == n:
            return [got[f] - inserted[f] for f in inserted]
        time.sleep(0.1)
    raise RuntimeError("the stream did not deliver the baseline alerts")


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "composition.cli", *args], env=env, stdout=out, stderr=out
        )


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    root = Path(args.workdir).absolute() / f"run-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    pg = PrivatePostgres(root / "postgres", fast=False)  # durable, as in production
    broker = PrivateMosquitto(root / "mosquitto")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        broker.start()
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE alerts")
        dsn = pg.dsn("alerts")
        migrate(dsn)
        key = _prepare(dsn, args.standard)
        env = {**os.environ, "PARCELTRACK_DSN": dsn, "PARCELTRACK_MQTT_URL": broker.url}
        log = root / "processes.log"
        for i in range(args.ingest_workers):
            procs.append(_spawn(env, log, "ingest", "--client-id", f"ingest-{i + 1}"))
        eta = ["--eta-inline"] if args.eta_inline else []
        procs.append(_spawn(env, log, "detect", "--tick", str(args.tick), "--no-mqtt", *eta))
        port = free_port()
        procs.append(_spawn(env, log, "api", "--port", str(port)))
        wait_for_port(port, timeout=60)
        follower = StreamFollower(f"http://127.0.0.1:{port}/v1/alerts/stream", key)
        follower.start()
        if not follower.connected.wait(30):
            raise RuntimeError("could not open the alert stream")
        time.sleep(3)  # ingest subscribed, detector past its (empty) replay
        stream_floor = _stream_baseline(dsn, follower)

        # `url` is the benchmark's own private broker, plain MQTT: not Settings.broker().
        client = MqttClient("bench-alerts", BrokerAddress.from_url(broker.url), max_inflight=1000)
        client.start()
        client.wait_connected(30)
        print(f"publishing {args.rate:,.0f} scans/s for {args.seconds:.0f} s ...", flush=True)
        load_before = os.getloadavg()[0]
        detectable, scans = _publish(client, args)
        achieved = scans / args.seconds
        wait_until = max(detectable.values(), default=time.time()) + 10
        while time.time() < wait_until:
            seen = {a["tracking_id"] for _, a in follower.opened if a["kind"] == "delay"}
            if detectable.keys() <= seen:
                break
            time.sleep(0.2)
        load_after = os.getloadavg()[0]
        client.stop()
        follower.stop.set()
        with psycopg.connect(dsn) as conn:
            stored = {
                str(t): float(lag)
                for t, lag in conn.execute(
                    "SELECT tracking_id, extract(epoch FROM ingested_at - ts) FROM scans "
                    "WHERE tracking_id = ANY(%s)",
                    (list(detectable),),
                )
            }
        loads = (load_before, load_after)
        for proc in procs:  # the detector logs its last tick-thread figures as it stops
            end_process(proc, 20)
        busy = [line for line in log.read_text(errors="replace").splitlines()
                if "tick thread:" in line]  # fmt: skip
        code = _report(args, detectable, follower, stream_floor, achieved, loads, stored)
        for line in busy:
            print("detector's", line[line.index("tick thread:") :])
        return code
    finally:
        for proc in procs:
            end_process(proc, 20)
        broker.destroy()
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _report(
    args: argparse.Namespace,
    detectable: dict[str, float],
    follower: StreamFollower,
    stream_floor: list[float],
    achieved: float,
    loads: tuple[float, float],
    ingest_lag: dict[str, float],
) -> int:
    load_before, load_after = loads
    first: dict[str, tuple[float, dict[str, Any]]] = {}
    for at, alert in follower.opened:
        if alert["kind"] == "delay" and alert["tracking_id"] not in first:
            first[alert["tracking_id"]] = (at, alert)
    latencies = [first[t][0] - d for t, d in detectable.items() if t in first]
    false = sorted(set(first) - set(detectable))
    missed = len(detectable) - len(latencies)
    # The detector's own idea of when the fault became detectable, against the truth.
    said = [
        datetime.fromisoformat(first[t][1]["detectable_at"]).timestamp() - d
        for t, d in detectable.items()
        if t in first and first[t][1].get("detectable_at")
    ]
    ms = 1000.0
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    f50, f99 = percentile(stream_floor, 0.5), percentile(stream_floor, 0.99)
    print()
    print(
        f"alert latency end to end, {achieved:,.0f} scans/s over MQTT, {args.ingest_workers} "
        f"ingest workers, detector tick {args.tick:g} s, parcel_eta written "
        f"{'on the tick thread' if args.eta_inline else 'by its own thread'}; load average "
        f"{load_before:.1f} "
        f"-> {load_after:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'n':>6}")
    print(
        f"{'fault detectable -> alert.opened on SSE':44} {p50 * ms:8.0f} {p99 * ms:8.0f} "
        f"{max(latencies, default=float('nan')) * ms:8.0f} {len(latencies):6d}"
    )
    print(
        f"{'baseline: alert INSERT -> SSE (same stream)':44} {f50 * ms:8.0f} {f99 * ms:8.0f} "
        f"{max(stream_floor) * ms:8.0f} {len(stream_floor):6d}"
    )
    print(f"{'baseline: half a detector tick':44} {args.tick / 2 * ms:8.0f}")
    # Where the time goes, per faulty parcel: its read into the database (ingest), the
    # alert row after the fault became detectable (detection, ticks included), the
    # alert from its row to the stream (API).
    opened = {t: datetime.fromisoformat(a["opened_at"]).timestamp() for t, (_, a) in first.items()}
    parts = {
        "  of which: read -> stored (ingest)": list(ingest_lag.values()),
        "  of which: detectable -> alert row (detect)": [
            opened[t] - d for t, d in detectable.items() if t in opened
        ],
        "  of which: alert row -> SSE (API)": [first[t][0] - opened[t] for t in opened],
    }
    for label, values in parts.items():
        print(
            f"{label:44} {percentile(values, 0.5) * ms:8.0f} {percentile(values, 0.99) * ms:8.0f}"
            f" {max(values, default=float('nan')) * ms:8.0f} {len(values):6d}"
        )
    if said:
        print(
            f"detector's detectable_at minus the truth: p50 {percentile(said, 0.5) * ms:.0f} ms,"
            f" max {max(said) * ms:.0f} ms"
        )
    print(f"faults {len(detectable)}, alerted {len(latencies)}, missed {missed}, "
          f"delay alerts for healthy parcels {len(false)}")  # fmt: skip
    met = p99 <= GOAL_P99_S and missed == 0 and achieved >= 0.95 * args.rate
    print(f"  {'met' if met else 'NOT met'}: p99 <= {GOAL_P99_S} s at {args.rate:,.0f} scans/s")
    return 0

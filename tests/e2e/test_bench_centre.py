"""A centre unlike the simulator's, configured only from site files: manual sort benches,
no tunnel, two hundred chutes, several successors per read point. Its scans go through
the real pipeline (MQTT, the ingest process, PostgreSQL, the detect process) and the
alerts are checked against the truth of the scenario built here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from composition.services import PrivateMosquitto, end_process
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from parceltrack.mqtt import MqttClient
from parceltrack.wire import encode_batch
from storage.model import ManifestEntry
from storage.reference import load_manifest
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SITE = "BNC1"
LINES, BENCHES, CHUTES, DOORS = 2, 8, 200, 20
STANDARD_S = {"induction": 20.0, "sort": 30.0, "chute": 60.0}  # express; standard: x2
# The plan is in force from well before any read; reads are placed before the moment
# they are published (seconds before "now", taken in the test).
PLAN_FROM = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def bench_of(chute: int) -> int:
    return (chute - 1) // (CHUTES // BENCHES) + 1


def door_of(chute: int) -> int:
    return (chute - 1) // (CHUTES // DOORS) + 1


def site_file() -> str:
    """The centre as its operator writes it (docs/site-files.md)."""
    out = [
        'format = "parceltrack-site"\nversion = 1\n',
        f'[site]\nid = "{SITE}"\nname = "Manual bench centre"\ntimezone = "Europe/Paris"\n',
        "[detection]\nskew_tolerance_s = 1.0\nduplicate_gap_s = 3.0\n",
        "[device_thresholds]\nsilence_s = 3600.0\n",  # hand scanners rest in cradles
    ]
    for cls, days in (("express", 1), ("standard", 2)):
        out.append(f'[[service_class]]\nid = "{cls}"\ndelivery_days = {days}\n')
    benches = ", ".join(f'"{SITE}-BEN{b:02d}"' for b in range(1, BENCHES + 1))
    for i in range(1, LINES + 1):
        out.append(f'[[read_point]]\nid = "{SITE}-IND{i}"\nzone = "induction"\n'
                   f'stage = "induction"\nposition = 1\nsuccessors = [{benches}]\n')  # fmt: skip
    for b in range(1, BENCHES + 1):
        chutes = [c for c in range(1, CHUTES + 1) if bench_of(c) == b]
        names = ", ".join(f'"{SITE}-CHU{c:03d}"' for c in chutes)
        out.append(f'[[read_point]]\nid = "{SITE}-BEN{b:02d}"\nzone = "sorter"\nstage = "sort"\n'
                   f'position = 2\ndescription = "Manual sort bench {b}"\n'
                   f"successors = [{names}]\n")  # fmt: skip
    for c in range(1, CHUTES + 1):
        out.append(f'[[read_point]]\nid = "{SITE}-CHU{c:03d}"\nzone = "chute"\nstage = "chute"\n'
                   f'position = 3\nsuccessors = ["{SITE}-DOR{door_of(c):02d}"]\n')  # fmt: skip
    for d in range(1, DOORS + 1):
        out.append(f'[[read_point]]\nid = "{SITE}-DOR{d:02d}"\nzone = "door"\n'
                   f'stage = "dispatch"\nposition = 4\n')  # fmt: skip
    # One hand scanner per induction line and bench; two roam the chutes and doors.
    fixed = [f"IND{i}" for i in range(1, LINES + 1)] + [f"BEN{b:02d}" for b in range(1, 9)]
    for rp in fixed:
        out.append(f'[[device]]\nid = "{SITE}-hand-{rp.lower()}"\nprotocol = "barcode"\n'
                   f'read_point = "{SITE}-{rp}"\n')  # fmt: skip
    for roaming in ("chutes", "doors"):
        out.append(f'[[device]]\nid = "{SITE}-hand-{roaming}"\nprotocol = "barcode"\n')
    for stage, seconds in STANDARD_S.items():
        for cls, factor in (("express", 1), ("standard", 2)):
            out.append(f'[[stage_standard]]\nstage = "{stage}"\nservice_class = "{cls}"\n'
                       f"max_seconds = {seconds * factor}\n")  # fmt: skip
    out.append('[sort_plans]\nfiles = ["BNC1-sortplan.csv"]\n')
    return "\n".join(out)


def sort_plan() -> str:
    rows = ["destination,chute,door,effective_from"]
    for c in range(1, CHUTES + 1):
        rows.append(f"D{c:03d},{SITE}-CHU{c:03d},{SITE}-DOR{door_of(c):02d},"
                    f"{PLAN_FROM.isoformat()}")  # fmt: skip
    return "\n".join(rows) + "\n"


@dataclass
class Journey:
    """One parcel's reads (read point, seconds before publishing) and the alerts it should
    raise."""

    tracking_id: str
    service_class: str
    destination: str
    reads: list[tuple[str, float]]
    alerts: set[str] = field(default_factory=set)


def journeys() -> list[Journey]:
    """On-time parcels, mis-sorts, late arrivals, parcels held in a chute beyond the
    standard but within three of them (delayed, not lost), and lost parcels."""
    out: list[Journey] = []
    serial = iter(range(20_000_000, 30_000_000))

    def parcel(cls: str, chute: int, kind: str, start: float) -> Journey:
        tid = str(S10.make("CP", next(serial), "FR"))
        f = 1 if cls == "express" else 2
        ind = f"IND{chute % LINES + 1}"
        planned = chute
        if kind == "missort":  # thrown into a chute of the same bench, to another door
            chute = next(
                c for c in range(1, CHUTES + 1)
                if bench_of(c) == bench_of(planned) and door_of(c) != door_of(planned)
            )  # fmt: skip
        t = start
        reads = [(ind, t)]
        t -= 10 * f
        reads.append((f"BEN{bench_of(chute):02d}", t))
        t -= (65 if kind == "late-sort" else 15) * f  # late-sort: past its 30 s standard
        reads.append((f"CHU{chute:03d}", t))
        alerts = {"missort"} if kind == "missort" else set()
        if kind == "late-sort":
            alerts.add("delay")
        if kind in ("ontime", "missort", "late-sort"):
            t -= 40 * f
            reads.append((f"DOR{door_of(chute):02d}", t))
        elif kind == "held":
            # In the chute for 100 s (standard 60 s x f): delayed; lost only after the
            # derived window (30 s + 2 standards) has also passed.
            pass
        elif kind == "lost":
            alerts |= {"delay", "missing"}
        if kind == "held":
            alerts.add("delay")
        return Journey(tid, cls, f"D{planned:03d}", [(f"{SITE}-{r}", s) for r, s in reads],
                       alerts)  # fmt: skip

    for i in range(120):
        cls = "express" if i % 3 else "standard"
        chute = (i * 37) % CHUTES + 1
        kind = ("ontime",) * 6 + ("missort", "late-sort", "held", "lost")
        k = kind[i % len(kind)]
        # Held parcels entered their chute 100 s (x f) ago; everything else began earlier.
        start = {"held": 125.0, "lost": 900.0}.get(k, 600.0)
        f = 1 if cls == "express" else 2
        out.append(parcel(cls, chute, k, start * f if k in ("held", "lost") else start))
    return out


@pytest.fixture
def processes(
    db_dsn: str, mqtt_server: PrivateMosquitto, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The ingest and detect processes on the private services."""
    env = {**os.environ, "PARCELTRACK_DSN": db_dsn, "PARCELTRACK_MQTT_URL": mqtt_server.url}
    procs = []
    for name, args in (("ingest", ["ingest"]), ("detect", ["detect", "--tick", "0.5"])):
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "composition.cli", *args],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        yield env
    finally:
        for proc in procs:
            end_process(proc, 10)


def test_a_bench_centre_from_site_files_alerts_as_the_truth_says(
    db_dsn: str, mqtt_server: PrivateMosquitto, tmp_path: Path, processes: dict[str, str]
) -> None:
    """Site files alone configure 200 chutes behind 8 benches; the pipeline's alerts are
    exactly the scenario's faults: mis-sorts, delays, and lost but not held parcels."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "BNC1.toml").write_text(site_file())
    (folder / "BNC1-sortplan.csv").write_text(sort_plan())
    applied = subprocess.run(
        [sys.executable, "-m", "composition.cli", "site", "apply", str(folder / "BNC1.toml")],
        env=processes, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert f"+ read point {SITE}-CHU200" in applied.stdout
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM read_point_successors WHERE read_point_id = %s",
            (f"{SITE}-IND1",),
        ).fetchone() == (BENCHES,)
        trips = journeys()
        load_manifest(
            conn,
            [ManifestEntry(j.tracking_id, j.service_class, j.destination, None, SITE)
             for j in trips],
        )  # fmt: skip

    # One message from one device (the centre's scanners behind one agent, replaying
    # its outbox): the morning's reads reach detection in one batch, so no tick judges a
    # parcel before its later reads are in.
    device = f"{SITE}-hand-all"
    now = datetime.now(UTC)
    events = [
        ScanEvent(device, 1, seq, now - timedelta(seconds=before), SITE, rp, EventKind.READ,
                  j.tracking_id, tracking_id=j.tracking_id)
        for seq, (j, (rp, before)) in enumerate(
            ((j, r) for j in trips for r in j.reads), start=1
        )
    ]  # fmt: skip
    client = MqttClient(f"bench-{time.monotonic_ns()}", BrokerAddress.from_url(mqtt_server.url))
    client.start()
    assert client.wait_connected()
    try:
        payload = encode_batch(SITE, device, "bench-agent", events)
        client.publish(topics.events(SITE, device), payload, qos=1).wait_for_publish(10)
    finally:
        client.stop()

    truth = {(kind, j.tracking_id) for j in trips for kind in j.alerts}
    assert {k for k, _ in truth} == {"missort", "delay", "missing"}

    def raised() -> set[tuple[str, str]]:
        with psycopg.connect(db_dsn) as conn:
            rows = conn.execute("SELECT kind, tracking_id FROM alerts").fetchall()
        return {(str(k), str(t)) for k, t in rows}

    wait_until(lambda: raised() >= truth, 60, "every true alert", interval=0.5)
    time.sleep(2.0)  # kept: a few more ticks, in which a false alert would show
    assert raised() == truth
    held = [j.tracking_id for j in trips if j.alerts == {"delay"} and len(j.reads) == 3]
    assert held and not {("missing", t) for t in held} & raised()

"""Detection shards (issue 18 item 3) as real `parceltrack detect --sites` processes
against a real PostgreSQL: disjoint sites side by side, a mis-routed parcel followed
across shards, a site moved from one shard to the other, and site ownership locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from composition.services import PrivateMosquitto
from detect.reference import DetectConfig
from detect.service import Detector, DetectSettings
from ingest.store import ScanPartitions, write_scans
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from parceltrack.mqtt import MqttClient
from tests.waiting import wait_until

SITES = ("A1", "B1", "C1")
STAGES = (("IND1", "induction", "induction", 1), ("DOR01", "door", "dispatch", 5))


def _parcel(n: int) -> str:
    return str(S10.make("CP", 10_000_000 + n, "GB"))


class Floor:
    """Three sites with an induction and a door each; parcels from A1 to B1."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seq = 0
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sites (site_id, name) VALUES (%s, %s)", [(s, s) for s in SITES]
            )
            cur.executemany(
                "INSERT INTO read_points (read_point_id, site_id, zone, stage, position) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(f"{s}-{rp}", s, z, st, pos) for s in SITES for rp, z, st, pos in STAGES],
            )
            cur.execute("INSERT INTO service_classes VALUES ('express', '', 1)")

    def parcels(self, *ids: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
                "destination_site, accepted_at) VALUES (%s, 'express', 'LON', 'A1', 'B1', now())",
                [(t,) for t in ids],
            )

    def read(self, tracking: str, read_point: str) -> None:
        """One read, now, written by the ingest's own write path in its own transaction."""
        self.seq += 1
        site = read_point.split("-")[0]
        event = ScanEvent(
            device=f"{read_point}-dev",
            boot=1,
            seq=self.seq,
            ts=datetime.now(UTC),
            site=site,
            read_point=read_point,
            kind=EventKind.READ,
            code=tracking,
            tracking_id=tracking,
        )
        with psycopg.connect(self.dsn) as conn:
            write_scans(conn, [event], ScanPartitions(timescale=False))


class Shard:
    """A `parceltrack detect --sites ...` process and its log."""

    def __init__(self, dsn: str, sites: str, log: Path, broker_url: str | None = None) -> None:
        self.log = log
        env = {**os.environ, "PARCELTRACK_DSN": dsn}
        env.pop("PARCELTRACK_MQTT_CA_FILE", None)
        mqtt = ["--no-mqtt"]
        if broker_url is not None:
            env["PARCELTRACK_MQTT_URL"], mqtt = broker_url, []
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "composition.cli", "detect", "--sites", sites, *mqtt,
                 "--tick", "0.2", "--overdue-after", "2", "--missing-after", "2"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_until(lambda: "rebuilt state of" in self.text(), 30, f"{self.log.name} ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)


@pytest.fixture
def floor(db_dsn: str) -> Floor:
    return Floor(db_dsn)


@pytest.fixture
def shards(tmp_path: Path) -> Iterator[list[Shard]]:
    started: list[Shard] = []
    yield started
    for s in started:
        s.stop(signal.SIGKILL)


def _start(
    shards: list[Shard], dsn: str, sites: str, log: Path, broker_url: str | None = None
) -> Shard:
    shard = Shard(dsn, sites, log, broker_url)
    shards.append(shard)
    return shard


def _two_ready(
    shards: list[Shard], dsn: str, sites: tuple[str, str], logs: Path, broker_url: str | None = None
) -> tuple[Shard, Shard]:
    """Shards "one" and "two" with these sites, started side by side, both ready."""
    one, two = (
        _start(shards, dsn, s, logs / f"{name}-{len(shards)}.log", broker_url)
        for name, s in zip(("one", "two"), sites, strict=True)
    )
    one.wait_ready()
    two.wait_ready()
    return one, two


def _alerts(dsn: str, tracking: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT alert_id, kind, site_id, state FROM alerts WHERE tracking_id = %s "
            "ORDER BY alert_id",
            (tracking,),
        ).fetchall()


def test_two_shards_alert_their_own_sites_and_follow_a_misrouted_parcel(
    floor: Floor, db_dsn: str, shards: list[Shard], tmp_path: Path
) -> None:
    """A stuck parcel at each shard's site gets one missing alert; a parcel read at A1
    (shard one) and then at C1 (shard two) gets one mis-route alert, from C1, and no
    delay or missing alert at A1 (shard one let it go)."""
    stuck_a, stuck_b, misrouted = _parcel(1), _parcel(2), _parcel(3)
    floor.parcels(stuck_a, stuck_b, misrouted)
    one, _ = _two_ready(shards, db_dsn, ("A1", "B1,C1"), tmp_path)
    floor.read(stuck_a, "A1-IND1")
    floor.read(stuck_b, "B1-IND1")
    floor.read(misrouted, "A1-IND1")
    floor.read(misrouted, "C1-IND1")
    floor.read(misrouted, "C1-DOR01")  # the last stage: nothing more is due there
    wait_until(
        lambda: (
            any(k == "missing" for _, k, _, _ in _alerts(db_dsn, stuck_b))
            and any(k == "missing" for _, k, _, _ in _alerts(db_dsn, stuck_a))
        ),
        30,
        "a missing alert for each stuck parcel",
    )
    time.sleep(3.0)  # past the delay and missing deadlines at A1 of the mis-routed parcel
    assert [(k, s) for _, k, s, _ in _alerts(db_dsn, stuck_a)] == [
        ("delay", "A1"),
        ("missing", "A1"),
    ]
    assert [(k, s) for _, k, s, _ in _alerts(db_dsn, stuck_b)] == [
        ("delay", "B1"),
        ("missing", "B1"),
    ]
    assert [(k, s) for _, k, s, _ in _alerts(db_dsn, misrouted)] == [("misroute", "C1")]
    assert "moved to another shard's sites" in one.text()


def test_a_site_moves_between_shards_without_losing_duplicating_or_reopening_an_alert(
    floor: Floor, db_dsn: str, shards: list[Shard], tmp_path: Path
) -> None:
    """B1 moves from shard one to shard two: its open alert stays the same open row,
    the new owner resolves it when the parcel moves on, and opens B1's next alert."""
    stuck, later = _parcel(4), _parcel(5)
    floor.parcels(stuck, later)
    one, two = _two_ready(shards, db_dsn, ("A1,B1", "C1"), tmp_path)
    floor.read(stuck, "B1-IND1")
    wait_until(
        lambda: [k for _, k, _, _ in _alerts(db_dsn, stuck)] == ["delay", "missing"],
        30,
        "B1's alerts from shard one",
    )
    before = _alerts(db_dsn, stuck)
    # The move: shard one gives B1 up, shard two takes it (a restart each).
    one.stop()
    two.stop()
    one, two = _two_ready(shards, db_dsn, ("A1", "B1,C1"), tmp_path)
    time.sleep(2.0)  # a few ticks of both with the alerts live
    assert _alerts(db_dsn, stuck) == before  # same rows, still open: neither lost nor doubled
    floor.read(stuck, "B1-DOR01")
    wait_until(
        lambda: all(state == "resolved" for *_, state in _alerts(db_dsn, stuck)),
        30,
        "shard two resolving B1's alerts",
    )
    floor.read(later, "B1-IND1")
    wait_until(
        lambda: [k for _, k, _, _ in _alerts(db_dsn, later)] == ["delay", "missing"],
        30,
        "B1's next alerts, from shard two",
    )
    assert [a[0] for a in _alerts(db_dsn, stuck)] == [a[0] for a in before]
    with psycopg.connect(db_dsn) as conn:
        reopened = conn.execute(
            "SELECT count(*) FROM alert_events e JOIN alerts a USING (alert_id) "
            "WHERE a.tracking_id = %s AND e.change = 'opened'",
            (stuck,),
        ).fetchone()
    assert reopened == (2,)


def test_a_detector_waits_for_a_site_another_detector_owns(
    db_dsn: str, floor: Floor, shards: list[Shard], tmp_path: Path
) -> None:
    """A second detector claiming a site already owned waits (and says so) until the
    owner stops, then takes it; an unsharded detector waits for every shard."""
    one = _start(shards, db_dsn, "A1,B1", tmp_path / "one.log")
    one.wait_ready()
    two = _start(shards, db_dsn, "B1,C1", tmp_path / "two.log")
    wait_until(lambda: "another detector owns B1" in two.text(), 30, "shard two waiting")
    assert "rebuilt state of" not in two.text()
    one.stop()
    two.wait_ready()


def test_a_shard_killed_and_restarted_alerts_once_and_forgets_a_parcel_that_left(
    floor: Floor, db_dsn: str, shards: list[Shard], tmp_path: Path
) -> None:
    """Shard one killed with SIGKILL: its open alert is not opened again on restart, a
    parcel stuck meanwhile is alerted once, and a parcel read at A1 and then at C1
    while it was down gets no alert at A1 after its replay."""
    before, meanwhile, left = _parcel(6), _parcel(7), _parcel(8)
    floor.parcels(before, meanwhile, left)
    one, _ = _two_ready(shards, db_dsn, ("A1", "B1,C1"), tmp_path)
    floor.read(before, "A1-IND1")
    wait_until(
        lambda: [k for _, k, _, _ in _alerts(db_dsn, before)] == ["delay", "missing"],
        30,
        "shard one's alerts",
    )
    one.stop(signal.SIGKILL)
    floor.read(meanwhile, "A1-IND1")
    floor.read(left, "A1-IND1")
    floor.read(left, "C1-IND1")
    floor.read(left, "C1-DOR01")
    time.sleep(5.0)  # every deadline at A1 passes while nobody owns A1
    one = _start(shards, db_dsn, "A1", tmp_path / "one-again.log")
    one.wait_ready()
    wait_until(
        lambda: [k for _, k, _, _ in _alerts(db_dsn, meanwhile)] == ["delay", "missing"],
        30,
        "the alerts that fell due while shard one was down",
    )
    time.sleep(2.0)  # a few more ticks: nothing else may open
    assert [(k, s, st) for _, k, s, st in _alerts(db_dsn, before)] == [
        ("delay", "A1", "open"),
        ("missing", "A1", "open"),
    ]
    assert [(k, s) for _, k, s, _ in _alerts(db_dsn, meanwhile)] == [
        ("delay", "A1"),
        ("missing", "A1"),
    ]
    assert [(k, s) for _, k, s, _ in _alerts(db_dsn, left)] == [("misroute", "C1")]


def test_each_shard_publishes_its_own_sites_alerts_once(
    floor: Floor, db_dsn: str, shards: list[Shard], tmp_path: Path, mqtt_server: PrivateMosquitto
) -> None:
    """With MQTT on, each alert change goes out once, on its site's topic, published
    by the shard that owns the site (one cursor per owned site)."""
    heard: list[tuple[str, int]] = []
    client = MqttClient("shard-alerts-watch", BrokerAddress.from_url(mqtt_server.url))
    client.on_message(
        lambda m: heard.append((m.topic, int(json.loads(bytes(m.payload))["event_id"])))
    )
    client.on_connect(lambda _rc: client.subscribe(topics.ALL_ALERTS, qos=1))
    client.start()
    try:
        assert client.wait_connected(30)
        stuck_a, stuck_b = _parcel(9), _parcel(10)
        floor.parcels(stuck_a, stuck_b)
        _two_ready(shards, db_dsn, ("A1", "B1,C1"), tmp_path, mqtt_server.url)
        floor.read(stuck_a, "A1-IND1")
        floor.read(stuck_b, "B1-IND1")
        with psycopg.connect(db_dsn) as conn:
            wait_until(
                lambda: count_rows(conn, "SELECT count(*) FROM alert_events") == 4,
                30,
                "four alert changes",
            )
            events = conn.execute(
                "SELECT event_id, alert->>'site_id' FROM alert_events ORDER BY event_id"
            ).fetchall()
        expected = sorted((topics.alerts(str(site)), int(e)) for e, site in events)
        wait_until(lambda: len(heard) >= 4, 30, "four alert messages")
        time.sleep(1.5)  # a second publisher of the same change would show by now
        assert sorted(heard) == expected
        with psycopg.connect(db_dsn) as conn:
            cursors = conn.execute(
                "SELECT publisher FROM alert_publish_cursor ORDER BY publisher"
            ).fetchall()
        # One per owned site; C1 had no alert, and its cursor holds the position it
        # reached, so its reads start there and not at the log's beginning.
        assert [c for (c,) in cursors] == ["detect:A1", "detect:B1", "detect:C1"]
    finally:
        client.stop()


def count_rows(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_sites_with_an_empty_name_are_refused_naming_the_option(tmp_path: Path) -> None:
    """`detect --sites A1,,B1` exits with a usage error that names --sites."""
    done = subprocess.run(
        [sys.executable, "-m", "composition.cli", "detect", "--sites", "A1,,B1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PARCELTRACK_DSN": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert done.returncode == 2
    assert "--sites" in done.stderr and "empty site name" in done.stderr


def test_a_shard_adopts_once_more_the_alerts_of_a_parcel_that_moved_in(
    floor: Floor, db_dsn: str
) -> None:
    """An alert the old shard opened in the instant after the parcel moved (before its
    feed showed the move) is adopted by the new shard `settle_s` later, and resolved:
    the move ended it."""
    parcel = _parcel(11)
    floor.parcels(parcel)
    shard = Detector(
        DetectSettings(
            dsn=db_dsn,
            sites=("B1", "C1"),
            config=DetectConfig(default_stage_s=2.0, default_missing_s=2.0),
            settle_s=5.0,
        )
    )
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        shard.start(conn, time.time())
        floor.read(parcel, "A1-IND1")
        floor.read(parcel, "C1-IND1")
        floor.read(parcel, "C1-DOR01")  # the last stage: nothing falls due at C1
        now = time.time()
        shard.step(conn, now)  # new to this shard: adopts what is live (nothing yet)
        conn.execute(  # shard one's late alert, as its tick would write it
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id) "
            "VALUES (%s, 'missing', 'A1', 'A1-IND1', %s)",
            (f"missing:{parcel}", parcel),
        )
        shard.step(conn, now + 1.0)
        assert ("missing", "A1", "open") in [(k, s, st) for _, k, s, st in _alerts(db_dsn, parcel)]
        shard.step(conn, now + 6.0)
    assert [(k, s, st) for _, k, s, st in _alerts(db_dsn, parcel)] == [
        ("misroute", "C1", "open"),
        ("missing", "A1", "resolved"),
    ]

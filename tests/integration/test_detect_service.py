"""The detection service against a real PostgreSQL: each alert kind, the lifecycle,
sort-plan versions, restart recovery, ETA and MQTT publication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from composition.services import PrivateMosquitto
from detect.publish import AlertPublisher
from detect.reference import DetectConfig
from detect.service import Detector, DetectSettings
from ingest.store import ScanPartitions
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.identifiers import S10
from parceltrack.mqtt import MqttClient
from storage.feed import record_commit
from tests.waiting import wait_until

P1, P2, P3 = "RR473124829GB", "EE471108151FR", "EE123456785CN"
P4 = str(S10.make("CP", 12345678, "GB"))
# Without clock tolerance and skippable stages the deadlines are the plain standards.
PLAIN = DetectConfig(skew_tolerance_s=0.0, skippable_stages=(), default_missing_s=20.0)


class Centre:
    """Site A1 (induction, tunnel, sorter, two chutes and doors), sites B1 and C1."""

    def __init__(self, conn: psycopg.Connection[Any], base: float) -> None:
        self.conn = conn
        self.base = base
        self.seq = 0
        self.partitions = ScanPartitions(timescale=False)
        conn.execute(
            "INSERT INTO sites (site_id, name) VALUES ('A1', 'A'), ('B1', 'B'), ('C1', 'C')"
        )
        points = [
            ("A1-IND1", "A1", "induction", "induction", 1),
            ("A1-TUN1", "A1", "tunnel", "tunnel", 2),
            ("A1-SRT1", "A1", "sorter", "sort", 3),
            ("A1-CHU01", "A1", "chute", "chute", 4),
            ("A1-CHU02", "A1", "chute", "chute", 4),
            ("A1-DOR01", "A1", "door", "dispatch", 5),
            ("A1-DOR02", "A1", "door", "dispatch", 5),
            ("B1-IND1", "B1", "induction", "induction", 1),
            ("B1-DOR01", "B1", "door", "dispatch", 5),
            ("C1-IND1", "C1", "induction", "induction", 1),
            ("C1-DOR01", "C1", "door", "dispatch", 5),
        ]
        # Devices stay quiet between these tests' scans: only the silence test minds.
        conn.execute("INSERT INTO device_thresholds (site_id, silence_s) VALUES ('A1', 1e6)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO read_points (read_point_id, site_id, zone, stage, position) "
                "VALUES (%s, %s, %s, %s, %s)",
                points,
            )
            cur.execute("INSERT INTO service_classes VALUES ('express', '', 1)")
            cur.executemany(
                "INSERT INTO stage_standards VALUES ('A1', %s, 'express', %s)",
                [("induction", 10.0), ("tunnel", 10.0), ("sort", 10.0), ("chute", 60.0)],
            )
            for version, at, chute, door in ((1, base - 10_000, 1, 1), (2, base + 500, 2, 2)):
                (pid,) = cur.execute(
                    "INSERT INTO sort_plans (site_id, version, effective_from) "
                    "VALUES ('A1', %s, to_timestamp(%s)) RETURNING sort_plan_id",
                    (version, at),
                ).fetchone() or (0,)
                cur.execute(
                    "INSERT INTO sort_plan_entries VALUES (%s, 'LON', %s, %s)",
                    (pid, f"A1-CHU{chute:02d}", f"A1-DOR{door:02d}"),
                )

    def parcel(self, tracking: str, accepted: float | None = None) -> None:
        self.conn.execute(
            "INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
            "destination_site, accepted_at) VALUES (%s, 'express', 'LON', 'A1', 'B1', "
            "to_timestamp(%s))",
            (tracking, self.base if accepted is None else accepted),
        )

    def scan(
        self,
        tracking: str | None,
        read_point: str,
        at: float,
        noread: bool = False,
        epc: str | None = None,
    ) -> None:
        ts = datetime.fromtimestamp(self.base + at, UTC)
        self.partitions.ensure(self.conn, [ts.date()])
        self.seq += 1
        with self.conn.transaction():  # as the ingest writes: logged for the scan feed
            record_commit(self.conn, [ts.date()])
            self.conn.execute(
                "INSERT INTO scans (ts, event_id, device_id, site_id, read_point_id, kind, "
                "tracking_id, epc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (ts, f"dev:1:{self.seq}", f"{read_point}-dev", read_point.split("-")[0],
                 read_point, "noread" if noread else "read", tracking, epc),
            )  # fmt: skip


@pytest.fixture
def centre(db_dsn: str) -> Iterator[Centre]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield Centre(conn, time.time() - 3600.0)


def _detector(dsn: str, config: DetectConfig = PLAIN) -> Detector:
    return Detector(DetectSettings(dsn=dsn, config=config))


def _alerts(conn: psycopg.Connection[Any], kind: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT coalesce(tracking_id, device_id), read_point_id, state FROM alerts "
        "WHERE kind = %s ORDER BY alert_id",
        (kind,),
    ).fetchall()


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _started(centre: Centre, dsn: str, at: float, config: DetectConfig = PLAIN) -> Detector:
    d = _detector(dsn, config)
    d.start(centre.conn, centre.base + at)
    return d


def test_delay_opens_after_the_stage_standard_and_resolves_at_the_next_stage(
    centre: Centre, db_dsn: str
) -> None:
    """A parcel past its stage standard gets one delay alert, resolved when it moves on."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 9.0)
    assert _alerts(centre.conn, "delay") == []
    d.step(centre.conn, centre.base + 11.0)
    d.step(centre.conn, centre.base + 12.0)
    assert _alerts(centre.conn, "delay") == [(P1, "A1-IND1", "open")]
    centre.scan(P1, "A1-TUN1", 13.0)
    d.step(centre.conn, centre.base + 14.0)
    assert _alerts(centre.conn, "delay") == [(P1, "A1-IND1", "resolved")]


def test_acknowledged_alert_stays_acknowledged_until_it_resolves(
    centre: Centre, db_dsn: str
) -> None:
    """An acknowledgement is kept across ticks and ends only with the alert's resolution."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 11.0)
    centre.conn.execute(
        "UPDATE alerts SET state = 'acknowledged', acked_by = 'ctl', acked_at = now()"
    )
    d.step(centre.conn, centre.base + 12.0)
    assert _alerts(centre.conn, "delay") == [(P1, "A1-IND1", "acknowledged")]
    centre.scan(P1, "A1-TUN1", 13.0)
    d.step(centre.conn, centre.base + 14.0)
    changes = centre.conn.execute(
        "SELECT change FROM alert_events e JOIN alerts a USING (alert_id) "
        "WHERE a.kind = 'delay' ORDER BY event_id"
    ).fetchall()
    assert [c for (c,) in changes] == ["opened", "acknowledged", "resolved"]


def test_missing_opens_after_the_window_and_any_read_resolves_it(
    centre: Centre, db_dsn: str
) -> None:
    """No read for the missing window after the deadline opens missing; a read closes it."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 29.0)
    assert _alerts(centre.conn, "missing") == []
    d.step(centre.conn, centre.base + 31.0)
    assert _alerts(centre.conn, "missing") == [(P1, "A1-IND1", "open")]
    centre.scan(P1, "A1-SRT1", 40.0)
    d.step(centre.conn, centre.base + 41.0)
    assert _alerts(centre.conn, "missing") == [(P1, "A1-IND1", "resolved")]


def test_missort_follows_the_sort_plan_version_in_force_at_the_read(
    centre: Centre, db_dsn: str
) -> None:
    """Chute 1 is right under plan 1 and wrong once plan 2 is in force; the right chute
    resolves the alert."""
    centre.parcel(P1)
    centre.parcel(P2)
    centre.scan(P1, "A1-CHU01", 100.0)  # plan 1 in force: right
    centre.scan(P2, "A1-CHU01", 600.0)  # plan 2 in force: wrong
    d = _started(centre, db_dsn, 601.0)
    d.step(centre.conn, centre.base + 602.0)
    assert _alerts(centre.conn, "missort") == [(P2, "A1-CHU01", "open")]
    centre.scan(P2, "A1-CHU02", 620.0)
    d.step(centre.conn, centre.base + 621.0)
    assert _alerts(centre.conn, "missort") == [(P2, "A1-CHU01", "resolved")]


def test_misroute_opens_at_a_third_site_and_resolves_at_the_destination(
    centre: Centre, db_dsn: str
) -> None:
    """A parcel from A1 for B1 read at C1 is mis-routed until it is read at B1."""
    centre.parcel(P1)
    centre.scan(P1, "A1-DOR01", 0.0)
    centre.scan(P1, "C1-IND1", 100.0)
    d = _started(centre, db_dsn, 101.0)
    d.step(centre.conn, centre.base + 102.0)
    assert _alerts(centre.conn, "misroute") == [(P1, "C1-IND1", "open")]
    centre.scan(P1, "B1-IND1", 200.0)
    d.step(centre.conn, centre.base + 201.0)
    assert _alerts(centre.conn, "misroute") == [(P1, "C1-IND1", "resolved")]


def test_late_when_the_delivery_standard_can_no_longer_be_met(centre: Centre, db_dsn: str) -> None:
    """An express parcel (J+1) accepted two days ago cannot make it: one late alert."""
    centre.parcel(P1, accepted=centre.base - 2 * 86400)
    centre.parcel(P2)
    centre.scan(P1, "A1-IND1", 0.0)
    centre.scan(P2, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 2.0)
    assert _alerts(centre.conn, "late") == [(P1, "A1-IND1", "open")]


def test_silent_device_alerts_and_resolves_when_heard_again(centre: Centre, db_dsn: str) -> None:
    """A device unheard for its site's silence window gets an alert; a report ends it; a
    site with a longer window keeps its device quiet longer."""
    centre.conn.execute("UPDATE device_thresholds SET silence_s = 30")
    centre.conn.execute("INSERT INTO device_thresholds (site_id, silence_s) VALUES ('B1', 300)")

    def report(at: float, device: str = "A1-scan-ind1", site: str = "A1") -> None:
        centre.conn.execute(
            "INSERT INTO device_health (device_id, site_id, reported_at, connected, health) "
            "VALUES (%s, %s, to_timestamp(%s), true, '{}') "
            "ON CONFLICT (device_id) DO UPDATE SET reported_at = EXCLUDED.reported_at",
            (device, site, centre.base + at),
        )

    report(0.0)
    report(0.0, "B1-scan-ind1", "B1")
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 29.0)
    assert _alerts(centre.conn, "silence") == []
    d.step(centre.conn, centre.base + 31.0)
    d.step(centre.conn, centre.base + 32.0)
    assert _alerts(centre.conn, "silence") == [("A1-scan-ind1", None, "open")]
    report(40.0)
    d.step(centre.conn, centre.base + 41.0)
    assert _alerts(centre.conn, "silence") == [("A1-scan-ind1", None, "resolved")]


def test_noread_spike_opens_and_closes_with_hysteresis(centre: Centre, db_dsn: str) -> None:
    """A scanner whose no-read rate jumps gets one alert, closed once the rate is low."""
    for i in range(200):  # ten minutes of normal reading before
        centre.scan(None, "A1-TUN1", i * 2.5, noread=i % 50 == 0)
    for i in range(30):  # then a minute with 40 % no-reads
        centre.scan(None, "A1-TUN1", 500.0 + i * 2.0, noread=i % 5 < 2)
    d = _started(centre, db_dsn, 560.0)
    d.step(centre.conn, centre.base + 560.0)
    assert _alerts(centre.conn, "noread") == [("A1-TUN1-dev", None, "open")]
    for i in range(30):  # a cleaner minute, but still above the close threshold
        centre.scan(None, "A1-TUN1", 560.0 + i * 2.0, noread=i % 7 == 0)
    d.step(centre.conn, centre.base + 620.0)
    assert _alerts(centre.conn, "noread") == [("A1-TUN1-dev", None, "open")]
    for i in range(30):
        centre.scan(None, "A1-TUN1", 620.0 + i * 2.0)
    d.step(centre.conn, centre.base + 680.0)
    assert _alerts(centre.conn, "noread") == [("A1-TUN1-dev", None, "resolved")]


def test_restart_neither_loses_duplicates_nor_reopens_alerts(centre: Centre, db_dsn: str) -> None:
    """Stopping the service and starting another on the same database keeps the alerts
    exactly as they were, and the new one resolves what the old one opened."""
    centre.parcel(P1)
    centre.parcel(P2)
    centre.parcel(P3)
    centre.scan(P1, "A1-IND1", 0.0)  # will be delayed and stay so
    centre.scan(P2, "A1-IND1", 0.0)  # delayed, then moves on: resolved
    centre.parcel(P4)
    centre.scan(P3, "A1-CHU02", 100.0)  # mis-sorted under plan 1
    centre.scan(P4, "A1-CHU02", 100.0)  # mis-sorted too, then put right: resolved
    first = _started(centre, db_dsn, 200.0)
    first.step(centre.conn, centre.base + 200.0)
    centre.scan(P2, "A1-TUN1", 201.0)
    centre.scan(P4, "A1-CHU01", 201.0)
    first.step(centre.conn, centre.base + 202.0)
    before = centre.conn.execute(
        "SELECT alert_id, kind, tracking_id, state FROM alerts ORDER BY alert_id"
    ).fetchall()
    events_before = centre.conn.execute("SELECT count(*) FROM alert_events").fetchone()
    assert ("delay", P2, "resolved") in [(k, t, s) for _, k, t, s in before]
    assert ("missort", P3, "open") in [(k, t, s) for _, k, t, s in before]
    assert ("missort", P4, "resolved") in [(k, t, s) for _, k, t, s in before]
    del first  # stopped

    second = _started(centre, db_dsn, 203.0)
    for at in (203.0, 204.0, 205.0):
        second.step(centre.conn, centre.base + at)
    after = centre.conn.execute(
        "SELECT alert_id, kind, tracking_id, state FROM alerts ORDER BY alert_id"
    ).fetchall()
    assert after == before
    assert centre.conn.execute("SELECT count(*) FROM alert_events").fetchone() == events_before
    centre.scan(P1, "A1-TUN1", 206.0)
    centre.scan(P3, "A1-CHU01", 207.0)
    second.step(centre.conn, centre.base + 208.0)
    live = centre.conn.execute("SELECT count(*) FROM alerts WHERE state <> 'resolved'").fetchone()
    total = centre.conn.execute("SELECT count(*) FROM alerts").fetchone()
    assert live == (0,)  # P1 moved on, P3 reached its planned chute
    assert total == (len(before),)


def test_service_loop_survives_a_restart_against_the_same_database(
    centre: Centre, db_dsn: str
) -> None:
    """The real run loop, stopped and started again, opens each alert exactly once."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 3000.0)  # an hour in: long overdue by now

    def run_once() -> None:
        d = _detector(db_dsn)
        stop = threading.Event()
        thread = threading.Thread(target=d.run, args=(stop,))
        thread.start()
        wait_until(
            lambda: d.ready.is_set() and _count(centre.conn, "SELECT count(*) FROM alerts") >= 2,
            20,
            "the detector ready with its two alerts",
        )
        time.sleep(1.5)  # kept: a tick or two more, in which a second opening would show
        stop.set()
        thread.join(10)

    run_once()
    run_once()
    rows = centre.conn.execute("SELECT kind, state FROM alerts ORDER BY kind").fetchall()
    assert rows == [("delay", "open"), ("missing", "open")]


def test_eta_is_written_for_the_api_and_learns_from_history(centre: Centre, db_dsn: str) -> None:
    """parcel_eta holds each parcel's next deadline and ETA; learned transits replace
    the standards once there is enough history."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    d.step(centre.conn, centre.base + 1.0)
    assert d.flush_eta(centre.conn) == 1
    row = centre.conn.execute(
        "SELECT stage, next_stage, extract(epoch FROM next_due - entered_at)::float8, "
        "extract(epoch FROM eta - entered_at)::float8 FROM parcel_eta WHERE tracking_id = %s",
        (P1,),
    ).fetchone()
    assert row is not None
    assert row[:2] == ("induction", "tunnel")
    assert (round(row[2], 2), round(row[3], 2)) == (10, 90)  # standards: 10 + 10 + 10 + 60

    for i in range(40):  # history: 40 parcels, each 4 s from induction to tunnel
        t = f"CP{10_000_000 + i:08d}0GB"
        centre.conn.execute(
            "INSERT INTO parcels (tracking_id, service_class, destination) "
            "VALUES (%s, 'express', 'LON')",
            (t,),
        )
        centre.scan(t, "A1-IND1", 100.0 + i)
        centre.scan(t, "A1-TUN1", 104.0 + i)
    from detect.store import learn_transits

    assert learn_transits(centre.conn) >= 1
    d.reload(centre.conn, centre.base + 200.0)
    d.flush_eta(centre.conn)
    (eta,) = centre.conn.execute(
        "SELECT extract(epoch FROM eta - entered_at)::float8 FROM parcel_eta "
        "WHERE tracking_id = %s",
        (P1,),
    ).fetchone() or (0.0,)
    assert round(eta, 2) == 84  # 4 learned + 10 + 10 + 60


def test_alerts_are_published_on_mqtt_and_the_cursor_moves(
    centre: Centre, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Each alert change goes to parceltrack/v1/{site}/alerts at QoS 1, once acknowledged."""
    broker = BrokerAddress.from_url(mqtt_server.url)
    got: list[dict[str, Any]] = []
    sub = MqttClient("test-alert-sub", broker)
    sub.on_message(lambda m: got.append({"topic": m.topic, **json.loads(m.payload)}))
    subscribed = threading.Event()
    sub.on_subscribe(lambda _reasons: subscribed.set())
    sub.start()
    try:
        assert sub.wait_connected()
        sub.subscribe(topics.ALL_ALERTS, qos=1)
        wait_until(subscribed.is_set, 10, "the SUBACK")
        centre.parcel(P1)
        centre.scan(P1, "A1-IND1", 0.0)
        d = _started(centre, db_dsn, 1.0)
        d.step(centre.conn, centre.base + 11.0)
        pub_client = MqttClient("test-alert-pub", broker)
        pub_client.start()
        assert pub_client.wait_connected()
        publisher = AlertPublisher(db_dsn, broker)
        assert publisher.drain(centre.conn, pub_client) == 1
        assert publisher.drain(centre.conn, pub_client) == 0  # nothing twice
        pub_client.stop()
        wait_until(lambda: got, 10, "the alert on MQTT")
    finally:
        sub.stop()
    assert [(m["topic"], m["change"], m["alert"]["kind"]) for m in got] == [
        (topics.alerts("A1"), "opened", "delay")
    ]


def test_unknown_read_points_and_odd_ids_do_not_stop_detection(centre: Centre, db_dsn: str) -> None:
    """A scan at an unconfigured read point or with a non-S10 id is skipped or tracked,
    never fatal, and other parcels are still checked."""
    centre.parcel(P1)
    centre.scan("NOT-AN-S10", "A1-IND1", 0.0)
    centre.conn.execute("INSERT INTO sites (site_id, name) VALUES ('Z9', 'Z')")
    centre.conn.execute(
        "INSERT INTO read_points (read_point_id, site_id, zone, stage) "
        "VALUES ('Z9-X', 'Z9', 'x', 'x')"
    )
    d = _started(centre, db_dsn, 1.0)
    centre.scan(P1, "Z9-Y", 1.0)  # not in read_points at all
    centre.scan(P1, "A1-IND1", 2.0)
    d.step(centre.conn, centre.base + 13.0)
    assert {t for t, _, _ in _alerts(centre.conn, "delay")} == {"NOT-AN-S10", P1}
    assert d.engine is not None and d.engine.unknown_read_points == 1


def test_rfid_reads_are_matched_to_parcels_by_their_tag(centre: Centre, db_dsn: str) -> None:
    """A tag read without a tracking number moves the parcel whose manifest names the EPC."""
    centre.parcel(P1)
    centre.conn.execute(
        "UPDATE parcels SET epc = '3174257BF4499602D2000000' WHERE tracking_id = %s", (P1,)
    )
    centre.scan(P1, "A1-IND1", 0.0)
    d = _started(centre, db_dsn, 1.0)
    centre.scan(None, "A1-TUN1", 5.0, epc="3174257BF4499602D2000000")
    d.step(centre.conn, centre.base + 12.0)
    assert _alerts(centre.conn, "delay") == []
    assert d.engine is not None
    slot = int(d.engine.state.find(d.engine.codec.encode([P1]))[0])
    assert d.engine.ref.read_points[int(d.engine.state.rp[slot])] == "A1-TUN1"


def test_an_alert_older_than_the_replay_window_survives_a_restart_until_its_parcel_returns(
    centre: Centre, db_dsn: str
) -> None:
    """A restart that replays too little to know a parcel keeps its alert open, and the
    parcel's next read resolves it."""
    centre.parcel(P1)
    centre.scan(P1, "A1-IND1", 0.0)
    first = _started(centre, db_dsn, 1.0)
    first.step(centre.conn, centre.base + 40.0)
    assert _alerts(centre.conn, "missing") == [(P1, "A1-IND1", "open")]
    second = Detector(DetectSettings(dsn=db_dsn, config=PLAIN, rebuild_s=100.0))
    second.start(centre.conn, centre.base + 500.0)
    second.step(centre.conn, centre.base + 501.0)
    assert _alerts(centre.conn, "missing") == [(P1, "A1-IND1", "open")]
    centre.scan(P1, "A1-TUN1", 502.0)
    second.step(centre.conn, centre.base + 503.0)
    assert _alerts(centre.conn, "missing") == [(P1, "A1-IND1", "resolved")]
    assert _alerts(centre.conn, "delay") == [(P1, "A1-IND1", "resolved")]


def test_a_killed_detect_process_restarts_without_touching_its_alerts(
    centre: Centre, db_dsn: str, tmp_path: Path
) -> None:
    """`parceltrack detect` killed with SIGKILL and started again leaves every alert and
    every alert event exactly as they were, then resolves what moves on."""
    centre.parcel(P1)
    centre.parcel(P2)
    centre.scan(P1, "A1-IND1", 3000.0)
    centre.scan(P2, "A1-CHU01", 3000.0)  # mis-sorted: plan 2 is in force

    def spawn(log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PARCELTRACK_DSN": db_dsn}
        with log.open("wb") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "composition.cli", "detect", "--no-mqtt",
                 "--skew-tolerance", "0", "--missing-after", "20"],
                env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def count(sql: str) -> int:
        return _count(centre.conn, sql)

    proc = spawn(tmp_path / "first.log")
    try:
        # Delay and missing for both (long overdue by now), missort for P2.
        wait_until(lambda: count("SELECT count(*) FROM alerts") >= 5, 30, "five alerts")
        assert count("SELECT count(*) FROM alerts") == 5
        time.sleep(2.5)  # kept: a few more ticks, in which a duplicate alert would show
    finally:
        proc.kill()
        proc.wait(10)
    before = centre.conn.execute("SELECT * FROM alerts ORDER BY alert_id").fetchall()
    events = centre.conn.execute("SELECT count(*) FROM alert_events").fetchone()
    second_log = tmp_path / "second.log"
    proc = spawn(second_log)
    try:
        wait_until(
            lambda: "rebuilt state of" in second_log.read_text(errors="replace"),
            30,
            "the restarted detector to replay and adopt the alerts",
        )
        time.sleep(2.0)  # kept: some ticks, in which a re-opened or changed alert would show
        assert centre.conn.execute("SELECT * FROM alerts ORDER BY alert_id").fetchall() == before
        assert centre.conn.execute("SELECT count(*) FROM alert_events").fetchone() == events
        centre.scan(P2, "A1-CHU02", 3500.0)
        resolved = "SELECT count(*) FROM alerts WHERE kind = 'missort' AND state = 'resolved'"
        wait_until(lambda: count(resolved) >= 1, 30, "the missort resolved")
        assert count(resolved) == 1
    finally:
        proc.terminate()
        proc.wait(10)

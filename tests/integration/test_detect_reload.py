"""Configuration reaches a running detector within one tick (LISTEN/NOTIFY on the
reference tables, migration 80), not on the 30 s poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from detect.service import Detector, DetectSettings
from tests.integration.test_detect_service import PLAIN, Centre
from tests.waiting import wait_until

P1, P2 = "RR473124829GB", "EE471108151FR"
TICK_S = 0.2


@pytest.fixture
def running(db_dsn: str) -> Iterator[tuple[Centre, Detector]]:
    """Centre A1 with one parcel 30 s into its 60 s chute standard, and a detector whose
    poll would take an hour: only a notification can bring it a change."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        centre = Centre(conn, time.time() - 3600.0)
        centre.parcel(P1)
        centre.scan(P1, "A1-CHU02", 3600.0 - 30.0)
        detector = Detector(
            DetectSettings(dsn=db_dsn, config=PLAIN, tick_s=TICK_S,
                           reload_every_s=3600.0)
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=detector.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(detector.ready.is_set, 30, "the detector started")
            yield centre, detector
        finally:
            stop.set()
            thread.join(10)


def _delays(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT tracking_id, details->>'deadline' FROM alerts WHERE kind = 'delay'"
    ).fetchall()


def test_a_changed_stage_standard_is_used_by_the_next_tick(
    running: tuple[Centre, Detector],
) -> None:
    """Cutting the chute standard from 60 s to 5 s opens the delay alert within a tick or two."""
    centre, _ = running
    time.sleep(3 * TICK_S)
    assert _delays(centre.conn) == []  # 30 s into a 60 s standard: on time
    changed = time.monotonic()
    centre.conn.execute(
        "UPDATE stage_standards SET max_seconds = 5 WHERE site_id = 'A1' AND stage = 'chute'"
    )
    wait_until(lambda: _delays(centre.conn) != [], 5, "the delay alert")
    took = time.monotonic() - changed
    assert took < 3 * TICK_S + 0.5, f"{took:.2f} s: not within a tick of the change"
    ((tracking, deadline),) = _delays(centre.conn)
    entered = centre.base + 3600.0 - 30.0
    assert tracking == P1
    assert abs(_epoch(str(deadline)) - (entered + 5.0)) < 0.01


def test_a_changed_silence_window_reaches_the_device_checks(
    running: tuple[Centre, Detector],
) -> None:
    """Shortening a site's silence window by SQL opens the silence alert without a restart."""
    centre, _ = running
    time.sleep(3 * TICK_S)
    silent = "SELECT count(*) FROM alerts WHERE kind = 'silence'"
    assert centre.conn.execute(silent).fetchone() == (0,)  # the fixture's window is 1e6 s
    centre.conn.execute("UPDATE device_thresholds SET silence_s = 10 WHERE site_id = 'A1'")
    wait_until(lambda: centre.conn.execute(silent).fetchone() == (1,), 5, "the silence alert")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_device_health_does_not_make_the_detector_reload(db_dsn: str) -> None:
    """The ingest's last_seen updates notify nothing; a standard's change notifies once."""
    with (
        psycopg.connect(db_dsn, autocommit=True) as listen,
        psycopg.connect(db_dsn, autocommit=True) as conn,
    ):
        Centre(conn, time.time())
        listen.execute("LISTEN parceltrack_reference")
        list(listen.notifies(timeout=0.2))  # what setting up the centre said
        conn.execute(
            "INSERT INTO devices (device_id, site_id, kind) VALUES ('d1', 'A1', 'barcode')"
        )
        list(listen.notifies(timeout=0.2))
        for _ in range(3):
            conn.execute("UPDATE devices SET last_seen = now() WHERE device_id = 'd1'")
        assert [n.payload for n in listen.notifies(timeout=0.5)] == []
        with conn.transaction():
            conn.execute("UPDATE stage_standards SET max_seconds = max_seconds + 1")
            conn.execute("UPDATE stage_standards SET max_seconds = max_seconds + 1")
        assert [n.payload for n in listen.notifies(timeout=0.5)] == ["stage_standards"]


def test_a_sites_own_clock_tolerance_is_used_and_changes_live(db_dsn: str) -> None:
    """A1's 60 s tolerance keeps a parcel 3 s past its standard on time (for a minute);
    set to 0, the next tick calls it delayed."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        centre = Centre(conn, time.time() - 3600.0)
        conn.execute("INSERT INTO site_tolerances VALUES ('A1', 60.0, 3.0)")
        centre.parcel(P1)
        centre.scan(P1, "A1-CHU02", 3600.0 - 63.0)  # the chute standard is 60 s
        detector = Detector(
            DetectSettings(dsn=db_dsn, config=PLAIN, tick_s=TICK_S,
                           reload_every_s=3600.0)
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=detector.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(detector.ready.is_set, 30, "the detector started")
            time.sleep(3 * TICK_S)
            assert _delays(conn) == []
            conn.execute("UPDATE site_tolerances SET skew_tolerance_s = 0 WHERE site_id = 'A1'")
            wait_until(lambda: _delays(conn) != [], 5, "the delay alert")
        finally:
            stop.set()
            thread.join(10)


def test_scans_stored_with_a_layout_change_still_raise_their_alerts(
    running: tuple[Centre, Detector],
) -> None:
    """A new read point and the reads at it come in one commit: the rebuild for the new
    layout replays what was taken before, and the late arrival there is still alerted."""
    centre, _ = running
    time.sleep(3 * TICK_S)
    entered = 3600.0 - 200.0
    with centre.conn.transaction():
        centre.conn.execute(
            "INSERT INTO read_points (read_point_id, site_id, zone, stage, position) "
            "VALUES ('A1-IND9', 'A1', 'induction', 'induction', 1)"
        )
        centre.parcel(P2)
        centre.scan(P2, "A1-IND9", entered)
        centre.scan(P2, "A1-TUN1", entered + 50.0)  # the induction standard is 10 s
    wait_until(lambda: (P2,) in [(t,) for t, _ in _delays(centre.conn)], 5, "P2's late arrival")
    with psycopg.connect(centre.conn.info.dsn) as conn:
        state = conn.execute(
            "SELECT state, read_point_id FROM alerts WHERE tracking_id = %s AND kind = 'delay'",
            (P2,),
        ).fetchall()
    # Opened and resolved at once, on arrival (and it is overdue in the tunnel now too).
    assert ("resolved", "A1-IND9") in state


def test_the_run_loop_keeps_ticking_past_its_busy_report(db_dsn: str) -> None:
    """The loop logs its busy figures and goes on ticking (it once indexed the emptied
    list of turns right after a report and the detector died after a minute)."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        centre = Centre(conn, time.time() - 60.0)
        centre.parcel(P1)
        centre.scan(P1, "A1-CHU02", 30.0)
    detector = Detector(DetectSettings(dsn=db_dsn, config=PLAIN, tick_s=0.05, report_every_s=0.1))
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            detector.run(stop)
        except BaseException as exc:  # the thread's death is what this test looks for
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(detector.ready.is_set, 30, "the detector started")
        time.sleep(1.0)  # several reports, dozens of ticks
        assert thread.is_alive() and failures == []
    finally:
        stop.set()
        thread.join(10)
    assert failures == []

"""parcel_eta written by the numpy-built binary COPY (detect/eta.py) holds exactly the
rows the row-by-row flush before issue 17 wrote, and the writer thread keeps it current."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from detect.reference import DetectConfig
from detect.service import Detector, DetectSettings
from tests.integration.test_detect_checkpoint import Floors, _parcel
from tests.waiting import wait_until

CONFIG = DetectConfig(default_stage_s=10.0, default_missing_s=10.0)


def _eta_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT tracking_id, site_id, read_point_id, stage, entered_at, next_stage, next_due, "
        "eta, eta_p90, delivery_due FROM parcel_eta ORDER BY tracking_id"
    ).fetchall()


def test_the_binary_eta_copy_writes_the_rows_of_the_old_flush(db_dsn: str) -> None:
    """For parcels mid-site, at the last stage, without a manifest row and with a tracking
    id that is not S10-shaped, both flushes write identical parcel_eta rows."""
    floors = Floors(db_dsn)
    mid, done, unknown = _parcel(1), _parcel(2), _parcel(3)
    floors.parcels(mid, done)
    floors.read(mid, "A1-IND1")
    floors.read(done, "A1-IND1")
    floors.read(done, "A1-DOR01")  # last stage: no next stage, no deadline
    floors.read(unknown, "B1-IND1")  # not in the manifest: no delivery standard
    floors.read("PARCEL-42/X", "C1-IND1")  # not S10-shaped: a negative key
    written = {}
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for inline in (True, False):
            d = Detector(DetectSettings(dsn=db_dsn, config=CONFIG, eta_inline=inline))
            d.start(conn, time.time())
            conn.execute("DELETE FROM parcel_eta")
            assert d.flush_eta(conn) == 4
            assert d.flush_eta(conn) == 0  # nothing moved since
            written[inline] = _eta_rows(conn)
    assert written[False] == written[True]
    by_id = {r[0]: r for r in written[False]}
    assert by_id[done][5:7] == (None, None)
    assert by_id[unknown][9] is None
    assert by_id["PARCEL-42/X"][1:4] == ("C1", "C1-IND1", "induction")


def test_the_eta_writer_thread_keeps_parcel_eta_current(db_dsn: str, tmp_path: Path) -> None:
    """In the run loop, a parcel's move reaches parcel_eta through the writer thread."""
    floors = Floors(db_dsn)
    parcel = _parcel(1)
    floors.parcels(parcel)
    floors.read(parcel, "A1-IND1")
    d = Detector(DetectSettings(dsn=db_dsn, config=CONFIG, tick_s=0.1, eta_flush_s=0.2))
    stop = threading.Event()
    thread = threading.Thread(target=d.run, args=(stop,))
    thread.start()
    try:
        with psycopg.connect(db_dsn, autocommit=True) as conn:

            def stage() -> Any:
                row = conn.execute(
                    "SELECT read_point_id FROM parcel_eta WHERE tracking_id = %s", (parcel,)
                ).fetchone()
                return row[0] if row else None

            wait_until(lambda: stage() == "A1-IND1", 20, "the first ETA row")
            floors.read(parcel, "A1-DOR01")
            wait_until(lambda: stage() == "A1-DOR01", 20, "the ETA row of the move")
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()

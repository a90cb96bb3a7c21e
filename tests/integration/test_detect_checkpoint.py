"""Detection checkpoints against a real PostgreSQL: a `parceltrack detect` killed with
SIGKILL and restarted from its checkpoint raises exactly the alerts of a detector never
restarted, and a damaged or foreign checkpoint is refused for the full replay."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from composition.services import PrivatePostgres
from detect.checkpoint import file_for
from detect.reference import DetectConfig
from detect.service import Detector, DetectSettings
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10
from storage import feed
from tests.plugins.services import _drop_database, _fresh_database
from tests.waiting import wait_until

SITES = ("A1", "B1", "C1")
STAGES = (("IND1", "induction", "induction", 1), ("DOR01", "door", "dispatch", 5))
SETTINGS = ["--tick", "0.2", "--overdue-after", "4", "--missing-after", "4"]


def _parcel(n: int) -> str:
    return str(S10.make("CP", 20_000_000 + n, "GB"))


@pytest.fixture
def twin_dsn(pg_server: PrivatePostgres, _template: str) -> Iterator[str]:
    """A second migrated database, for a detector that is never restarted."""
    dsn = _fresh_database(pg_server.dsn(), _template)
    yield dsn
    _drop_database(pg_server.dsn(), dsn)


class Floors:
    """The same three sites in each database; each read is written to all of them
    alike (same event id, same time) by the ingest's own write path."""

    def __init__(self, *dsns: str) -> None:
        self.dsns = dsns
        self.seq = 0
        for dsn in dsns:
            with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
                cur.executemany("INSERT INTO sites (site_id, name) VALUES (%s, %s)",
                                [(s, s) for s in SITES])  # fmt: skip
                cur.executemany(
                    "INSERT INTO read_points (read_point_id, site_id, zone, stage, position) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(f"{s}-{rp}", s, z, st, pos) for s in SITES for rp, z, st, pos in STAGES],
                )
                cur.execute("INSERT INTO service_classes VALUES ('express', '', 1)")
                # No device falls silent during a test: only parcel alerts are compared.
                cur.executemany(
                    "INSERT INTO device_thresholds (site_id, silence_s) VALUES (%s, 1e6)",
                    [(s,) for s in SITES],
                )

    def parcels(self, *ids: str) -> None:
        for dsn in self.dsns:
            with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO parcels (tracking_id, service_class, destination, "
                    "origin_site, destination_site, accepted_at) "
                    "VALUES (%s, 'express', 'LON', 'A1', 'B1', now())",
                    [(t,) for t in ids],
                )

    def read(self, tracking: str, read_point: str, ago_s: float = 0.0) -> None:
        self.seq += 1
        at = datetime.fromtimestamp(time.time() - ago_s, UTC)
        event = ScanEvent(
            device=f"{read_point}-dev", boot=1, seq=self.seq, ts=at,
            site=read_point.split("-")[0], read_point=read_point, kind=EventKind.READ,
            code=tracking, tracking_id=tracking,
        )  # fmt: skip
        for dsn in self.dsns:
            with psycopg.connect(dsn) as conn:
                write_scans(conn, [event], ScanPartitions(timescale=False))


def _spawn(dsn: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PARCELTRACK_DSN": dsn}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "composition.cli", "detect", "--no-mqtt", *SETTINGS, *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _alerts(dsn: str) -> list[tuple[Any, ...]]:
    """Every alert as the detector decided it, with how often it was opened."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT kind, tracking_id, site_id, read_point_id, episode, state, "
            "extract(epoch FROM detectable_at)::float8, "
            "(SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id "
            " AND e.change = 'opened') FROM alerts a ORDER BY 1, 2, 5"
        ).fetchall()


def _kinds(dsn: str, *live: str) -> set[tuple[str, str]]:
    return {(k, t) for k, t, _s, _r, _e, state, _d, _n in _alerts(dsn) if state in live}


def test_a_killed_detector_resumes_from_its_checkpoint_with_the_alerts_of_one_never_restarted(
    db_dsn: str, twin_dsn: str, tmp_path: Path
) -> None:
    """Killed with SIGKILL after opening alerts the checkpoint does not know of, and
    restarted after reads that resolve some and make others due, the detector resumes
    from its checkpoint and ends with the very alerts (same rows, episodes, times and
    one opening each) of a detector that ran throughout."""
    floors = Floors(db_dsn, twin_dsn)
    p = [_parcel(i) for i in range(7)]
    floors.parcels(*p)
    floors.read(p[1], "A1-IND1")  # stuck: delay and missing at A1
    floors.read(p[2], "A1-IND1")
    floors.read(p[2], "A1-DOR01")  # on time: no alert
    floors.read(p[3], "C1-IND1")  # mis-routed
    folder = tmp_path / "checkpoints"
    steady = _spawn(twin_dsn, tmp_path / "steady.log")
    restarted = _spawn(db_dsn, tmp_path / "first.log", "--checkpoint-dir", str(folder),
                       "--checkpoint-every", "3600")  # fmt: skip
    try:
        for log in ("steady.log", "first.log"):
            wait_until(lambda log=log: "rebuilt state" in (tmp_path / log).read_text(), 30,
                       f"{log}: ready")  # fmt: skip
        wait_until(file_for(folder, None).exists, 20, "the checkpoint written after the replay")
        floors.read(p[4], "A1-IND1")  # stuck until after the kill
        floors.read(p[5], "A1-IND1")
        floors.read(p[5], "C1-IND1")  # mis-routed after the checkpoint
        # Every condition that the reads below end is open before the kill: one that
        # begins and ends while no detector runs is alerted by neither a replay nor a
        # checkpoint (a delay seen on arrival aside), so the two would differ.
        due = {(k, p[i]) for k in ("delay", "missing") for i in (1, 3, 4, 5)}
        due |= {("misroute", p[3]), ("misroute", p[5])}
        for dsn in (db_dsn, twin_dsn):
            wait_until(lambda dsn=dsn: _kinds(dsn, "open") >= due, 40, "the first alerts")
        restarted.send_signal(signal.SIGKILL)
        restarted.wait(10)
        floors.read(p[4], "A1-DOR01")  # resolves its delay and missing
        floors.read(p[5], "B1-IND1")  # resolves the mis-route; due at B1 next
        floors.read(p[3], "B1-DOR01")  # resolves the mis-route; done
        floors.read(p[6], "A1-IND1")  # falls due while the detector is down
        time.sleep(6.0)
        second = tmp_path / "second.log"
        restarted = _spawn(db_dsn, second, "--checkpoint-dir", str(folder))
        wait_until(lambda: "rebuilt state" in second.read_text(), 30, "the restart")
        assert "from a checkpoint" in second.read_text(), second.read_text()
        assert "refused" not in second.read_text()
        settled = {("delay", p[6]), ("missing", p[6]), ("delay", p[5]), ("missing", p[5])}
        for dsn in (db_dsn, twin_dsn):
            wait_until(lambda dsn=dsn: _kinds(dsn, "open") >= settled, 40, "the last alerts")
        time.sleep(1.5)  # kept: more ticks, in which a re-opened or extra alert would show
        assert _alerts(db_dsn) == _alerts(twin_dsn)
        # p3 and p5 were also overdue at C1 until read at B1.
        moved_on = {(k, t) for k in ("delay", "missing") for t in (p[3], p[4], p[5])}
        assert _kinds(db_dsn, "resolved") == moved_on | {("misroute", p[3]), ("misroute", p[5])}
        assert all(n == 1 for *_, n in _alerts(db_dsn))
    finally:
        for proc in (steady, restarted):
            proc.kill()
            proc.wait(10)


# A flat missing window (no derived part), as the tests of detect_service use.
PLAIN = DetectConfig(
    skew_tolerance_s=0.0, default_stage_s=10.0, default_missing_s=10.0, missing_factor=0.0
)


def _detector(dsn: str, folder: Path, sites: tuple[str, ...] | None = None) -> Detector:
    return Detector(DetectSettings(dsn=dsn, config=PLAIN, checkpoint_dir=folder, sites=sites))


def _damage_garbage(conn: psycopg.Connection[Any], path: Path) -> None:
    path.write_bytes(b"not a checkpoint at all")


def _damage_truncated(conn: psycopg.Connection[Any], path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flipped(conn: psycopg.Connection[Any], path: Path) -> None:
    """Flip a byte in the middle of the header member's data, which the zip CRC covers.
    (A flip at a fixed offset of the file may land in zip metadata nothing reads, such
    as a local header's timestamp: harmless, and then rightly loaded.)"""
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("header.npy")
    data = bytearray(path.read_bytes())
    start = member.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, start + 26)  # local file header
    data_start = start + 30 + name_len + extra_len
    data[data_start + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _foreign_shard(conn: psycopg.Connection[Any], path: Path) -> None:
    shard = _detector(conn.info.dsn, path.parent, sites=("A1",))
    shard.start(conn, time.time() + 15.0)  # when its delays hold, as for the others
    assert shard.save_checkpoint(time.time() + 15.0)
    file_for(path.parent, ("A1",)).replace(path)


def _stale_schema(conn: psycopg.Connection[Any], path: Path) -> None:
    conn.execute("INSERT INTO schema_migrations (version, name, flavour) "
                 "VALUES (999, 'a later migration', 'postgres')")  # fmt: skip


def _pruned_feed(conn: psycopg.Connection[Any], path: Path) -> None:
    for _ in range(3):
        conn.execute("SELECT pg_current_xact_id()")  # transactions after the checkpoint
    feed.prune(conn, feed.current_position(conn).xmax)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_damage_garbage, "damaged checkpoint"),
        (_damage_truncated, "damaged checkpoint"),
        (_damage_flipped, "damaged checkpoint"),
        (_foreign_shard, "another sites"),
        (_stale_schema, "another schema"),
        (_pruned_feed, "pruned past its position"),
    ],
    ids=["garbage", "truncated", "flipped-byte", "another-shard", "stale-schema", "pruned-feed"],
)
def test_a_damaged_or_foreign_checkpoint_is_refused_and_the_scans_replayed(
    db_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    """A checkpoint that is damaged, another shard's, from an older schema or behind the
    pruned feed is refused with the reason logged; the full replay rebuilds the state
    and the alerts stay as they were, none re-opened."""
    floors = Floors(db_dsn)
    stuck, moving = _parcel(1), _parcel(2)
    floors.parcels(stuck, moving)
    floors.read(stuck, "A1-IND1")
    floors.read(moving, "A1-IND1")
    folder = tmp_path / "checkpoints"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        first = _detector(db_dsn, folder)
        first.start(conn, time.time() + 15.0)
        first.step(conn, time.time() + 15.0)  # delay for both parcels
        assert first.save_checkpoint(time.time() + 15.0)
        before = _alerts(db_dsn)
        assert [k for k, *_ in before] == ["delay", "delay"]
        floors.read(moving, "A1-DOR01")  # after the checkpoint: resolves its delay
        damage(conn, file_for(folder, None))
        caplog.set_level(logging.INFO, logger="detect.service")
        second = _detector(db_dsn, folder)
        second.start(conn, time.time() + 16.0)
        second.step(conn, time.time() + 16.0)
    assert second.resumed is None
    refusals = [r.getMessage() for r in caplog.records if "checkpoint refused" in r.getMessage()]
    assert refusals and reason in refusals[0], refusals
    assert second.engine is not None and len(second.engine.state) == 2
    after = _alerts(db_dsn)
    assert [(k, t, s, n) for k, t, _s, _r, _e, s, _d, n in after] == [
        ("delay", stuck, "open", 1),
        ("delay", moving, "resolved", 1),
    ]


def test_a_shard_resuming_from_its_checkpoint_lets_go_of_a_parcel_that_left_meanwhile(
    db_dsn: str, tmp_path: Path
) -> None:
    """Shard A1's checkpoint holds a parcel that is read at C1 (another shard's site)
    before the restart: the resumed shard drops it and raises no alert at A1 for it."""
    floors = Floors(db_dsn)
    left, stays = _parcel(1), _parcel(2)
    floors.parcels(left, stays)
    floors.read(left, "A1-IND1")
    floors.read(stays, "A1-IND1")
    folder = tmp_path / "checkpoints"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        first = _detector(db_dsn, folder, sites=("A1",))
        first.start(conn, time.time())
        assert first.save_checkpoint(time.time())
        floors.read(left, "C1-IND1")
        second = _detector(db_dsn, folder, sites=("A1",))
        second.start(conn, time.time())
        assert second.resumed is not None and second.last_start is not None
        assert second.last_start.scans == 0  # C1's read is not this shard's scan
        engine = second.engine
        assert engine is not None
        assert engine.state.find(engine.codec.encode([left, stays])).tolist()[0] == -1
        assert engine.state.find(engine.codec.encode([stays]))[0] >= 0
        second.step(conn, time.time() + 30.0)
    assert {(k, t) for k, t, *_ in _alerts(db_dsn)} == {("delay", stays), ("missing", stays)}


def test_a_stopped_detector_writes_its_checkpoint_and_resumes_with_nothing_to_catch_up(
    db_dsn: str, tmp_path: Path
) -> None:
    """`parceltrack detect` stopped with SIGTERM writes a checkpoint as it stops; the next
    start resumes from it with no scan to catch up on and touches no alert."""
    floors = Floors(db_dsn)
    stuck = _parcel(1)
    floors.parcels(stuck)
    floors.read(stuck, "A1-IND1")
    folder = tmp_path / "checkpoints"
    log = tmp_path / "detect.log"
    proc = _spawn(db_dsn, log, "--checkpoint-dir", str(folder), "--checkpoint-every", "3600")
    try:
        wait_until(lambda: len(_kinds(db_dsn, "open")) == 2, 40, "delay and missing")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert log.read_text().count("checkpoint of 1 parcels written") == 2  # start, stop
        before = _alerts(db_dsn)
        proc = _spawn(db_dsn, log, "--checkpoint-dir", str(folder))
        wait_until(lambda: "and 0 scans committed since" in log.read_text(), 30, "the resume")
        time.sleep(1.5)  # kept: ticks, in which a re-opened alert would show
        assert _alerts(db_dsn) == before
    finally:
        proc.kill()
        proc.wait(10)


def test_a_late_arrival_committed_after_the_checkpoint_is_alerted_on_resume(
    db_dsn: str, tmp_path: Path
) -> None:
    """A parcel that reached its next stage after the standard, in scans committed while
    the detector was down, gets its delay (opened and resolved at once, as a running
    detector does), from the catch-up after the checkpoint."""
    floors = Floors(db_dsn)
    parcel = _parcel(1)
    floors.parcels(parcel)
    floors.read(parcel, "A1-IND1", ago_s=60.0)
    folder = tmp_path / "checkpoints"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        first = _detector(db_dsn, folder)
        first.start(conn, time.time() - 55.0)  # stopped before the standard (10 s) ran out
        assert first.save_checkpoint(time.time() - 55.0)
        floors.read(parcel, "A1-DOR01", ago_s=30.0)  # 30 s after induction: late
        second = _detector(db_dsn, folder)
        second.start(conn, time.time())
        assert second.resumed is not None
    rows = _alerts(db_dsn)
    assert [(k, t, rp, s, n) for k, t, _site, rp, _e, s, _d, n in rows] == [
        ("delay", parcel, "A1-IND1", "resolved", 1)
    ]

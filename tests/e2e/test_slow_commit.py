"""Slow commit (issue 13): one ingest transaction held open for 20 s under load, with
the whole pipeline as real processes. Detection follows commits (storage/feed.py),
so the held scans still reach it when they commit, and no false missing alert opens.

The hold is the database's doing, as a slow disk or a lock would be: a deferred
constraint trigger sleeps at COMMIT in the first ingest transaction that carries a
door read (a parcel's last read: nothing later would move the parcel on if its door
read were skipped, so a skipped read would end in a missing alert)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from composition.pipeline import Pipeline
from firmware_sim.scenario import ScenarioConfig, generate
from tests.counting import count
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SCENARIO = generate(
    ScenarioConfig.barcode_only(seed=7, parcels=40, rate_per_s=2.0, lost_rate=0.0, noread_rate=0.0)
)
SPEED = 2.0
HOLD_S = 20.0
MISSING_AFTER_S = 30.0  # > HOLD_S: a door read late by the hold alone is not missing

HOLD_ONE_COMMIT = f"""
CREATE TABLE slow_commit_armed (armed boolean);
INSERT INTO slow_commit_armed VALUES (true);
CREATE TABLE slow_commit_log (xact_id xid8, began timestamptz, ended timestamptz);
CREATE FUNCTION slow_commit_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- SKIP LOCKED: other transactions neither wait for the held one nor hold too.
    DELETE FROM slow_commit_armed WHERE ctid IN
        (SELECT ctid FROM slow_commit_armed FOR UPDATE SKIP LOCKED LIMIT 1);
    IF FOUND THEN
        INSERT INTO slow_commit_log VALUES (pg_current_xact_id(), now(), NULL);
        PERFORM pg_sleep({HOLD_S});
        UPDATE slow_commit_log SET ended = clock_timestamp()
        WHERE xact_id = pg_current_xact_id();
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON scans
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.read_point_id LIKE '%-DOR%') EXECUTE FUNCTION slow_commit_hold();
"""


@pytest.fixture(scope="module")
def pipeline(services_dir: Path) -> Iterator[Pipeline]:
    p = Pipeline(
        services_dir / "slow-commit",
        SCENARIO,
        speed=SPEED,
        missing_after_s=MISSING_AFTER_S,
        ingest_workers=2,  # the other worker keeps committing while one is held
    )
    try:
        p.start_services()
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            conn.execute(HOLD_ONE_COMMIT.encode())
        p.start_processes()
        p.wait_healthy()
        yield p
    finally:
        p.stop()


def test_a_commit_held_20s_reaches_detection_and_opens_no_missing_alert(
    pipeline: Pipeline,
) -> None:
    """The held transaction's door reads reach detection (each parcel ends at its door
    in parcel_eta), every read is stored once, and no missing alert opens."""
    dsn = pipeline.dsn
    duration = SCENARIO.reads[-1].at / SPEED
    wait_until(
        lambda: count(dsn, "SELECT count(*) FROM slow_commit_log WHERE ended IS NOT NULL") == 1,
        duration + HOLD_S + 60,
        "the held commit",
        interval=0.5,
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT xact_id::text, extract(epoch FROM ended - began) FROM slow_commit_log"
        ).fetchone()
        assert row is not None
        held_xact, held_s = str(row[0]), float(row[1])
        held = conn.execute(
            "SELECT tracking_id, read_point_id FROM scans WHERE xact_id = %s::xid8",
            (held_xact,),
        ).fetchall()
        during = conn.execute(
            "SELECT count(*) FROM scans s, slow_commit_log l WHERE s.xact_id <> l.xact_id "
            "AND s.ingested_at > l.began AND s.ingested_at < l.ended"
        ).fetchone()
    assert held_s >= HOLD_S
    assert any("-DOR" in rp for _, rp in held), held
    assert during is not None and during[0] > 0, "no other transaction committed meanwhile"
    print(f"held commit: {held_s:.1f} s, {len(held)} scans; {during[0]} scans committed meanwhile")

    doors = {t: rp for t, rp in held if "-DOR" in rp}

    def at_their_doors() -> bool:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT tracking_id, read_point_id FROM parcel_eta WHERE tracking_id = ANY(%s)",
                (list(doors),),
            ).fetchall()
        return dict(rows) == doors

    wait_until(at_their_doors, 30, "the held parcels at their doors in parcel_eta", interval=0.5)
    stored = count(dsn, "SELECT count(*) FROM scans")
    distinct = count(dsn, "SELECT count(DISTINCT event_id) FROM scans")
    assert stored == distinct == len(SCENARIO.reads)
    # A skipped door read leaves its parcel at the chute: missing at the chute deadline
    # (passed during the hold) + the missing window. Wait past that, then look.
    wait_until(
        lambda: (
            count(
                dsn,
                "SELECT count(*) FROM slow_commit_log "
                f"WHERE ended < now() - interval '{MISSING_AFTER_S + 10} seconds'",
            )
            == 1
        ),
        MISSING_AFTER_S + 30,
        "the missing window after the held commit",
        interval=1.0,
    )
    missing = count(dsn, "SELECT count(*) FROM alerts WHERE kind = 'missing'")
    print(f"missing alerts: {missing}")
    assert missing == 0

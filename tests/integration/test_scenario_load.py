from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from firmware_sim.clock import PlaybackClock
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate
from parceltrack.layout import Stage
from storage.model import StageStandard
from storage.reference import (
    ReferenceDataError,
    load,
    load_layout,
    load_manifest,
    load_standards,
)

SCENARIO = generate(
    ScenarioConfig(
        seed=2,
        parcels=400,
        sites=("LHR1", "MAN1"),
        rfid_sites=("MAN1",),
        faults=FaultRates(missort=0.02, lost=0.02),
    )
)


def test_a_scenario_loads_everything_the_system_needs(db_dsn: str) -> None:
    """Sites, read points, devices with protocols, standards, plans and manifest land in PG."""
    clock = PlaybackClock(datetime(2026, 11, 24, 8, 0, tzinfo=UTC), speed=60.0)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        rows = load(conn, SCENARIO.reference_data(clock))
        assert rows == len(SCENARIO.manifest)
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM read_points").fetchone() == (
            len(SCENARIO.read_points),
        )
        kinds = dict(
            conn.execute("SELECT device_id, kind FROM devices").fetchall()  # type: ignore[arg-type]
        )
        assert kinds["MAN1-rfid-tun1"] == "r2000" and kinds["MAN1-rfid-dor01"] == "mercury"
        assert kinds["LHR1-scan-tun1"] == "barcode"
        # Standards are stored in wall-clock seconds of the accelerated playback.
        express = conn.execute(
            "SELECT max_seconds FROM stage_standards WHERE site_id = 'LHR1' AND "
            "stage = 'tunnel' AND service_class = 'express'"
        ).fetchone()
        assert express == (pytest.approx(6.0 * 1.25 / 60.0),)
        plans = conn.execute(
            "SELECT version, effective_from FROM sort_plans WHERE site_id = 'MAN1' ORDER BY version"
        ).fetchall()
        change = next(p for p in SCENARIO.sort_plans if p.version == 2).effective_from_s
        assert plans == [(1, clock.start), (2, clock.start + timedelta(seconds=change / 60.0))]
        entry = conn.execute(
            "SELECT e.chute_read_point_id, e.door_read_point_id FROM sort_plan_entries e "
            "JOIN sort_plans p USING (sort_plan_id) WHERE p.site_id = 'LHR1' "
            "AND p.version = 2 AND e.destination = 'LON'"
        ).fetchone()
        assert entry == ("LHR1-CHU02", "LHR1-DOR02")
        tagged = next(m for m in SCENARIO.manifest if m.epc)
        stored = conn.execute(
            "SELECT epc, origin_site, destination_site, service_class FROM parcels "
            "WHERE tracking_id = %s",
            (tagged.tracking_id,),
        ).fetchone()
        assert stored == (tagged.epc, "MAN1", tagged.destination_site, tagged.service_class)
        # Loading again is idempotent.
        assert load(conn, SCENARIO.reference_data(clock)) == len(SCENARIO.manifest)
        assert conn.execute("SELECT count(*) FROM parcels").fetchone() == (len(SCENARIO.manifest),)


def test_a_conflicting_manifest_is_refused_whole(db_dsn: str) -> None:
    """An EPC already held by another parcel is a clear error and nothing is loaded."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        data = SCENARIO.reference_data()
        load(conn, data)
        tagged = next(m for m in data.manifest if m.epc)
        thief = replace(data.manifest[0], tracking_id="CP000000005GB", epc=tagged.epc)
        other = replace(data.manifest[1], tracking_id="CP000000019GB", epc=None)
        with pytest.raises(ReferenceDataError, match="not loaded"):
            load_manifest(conn, [other, thief])
        assert conn.execute(
            "SELECT count(*) FROM parcels WHERE tracking_id = 'CP000000019GB'"
        ).fetchone() == (0,)


def test_the_loader_refuses_a_stage_standard_for_a_stage_the_site_lacks(db_dsn: str) -> None:
    """The loader refuses, as the admin API does, a standard that would never apply."""
    data = SCENARIO.reference_data()
    stray = StageStandard("LHR1", Stage.CUSTOMS, "express", 60.0)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        load_layout(conn, data)
        with pytest.raises(ReferenceDataError, match="'LHR1' has no read point at stage 'customs'"):
            load_standards(conn, replace(data, stage_standards=(*data.stage_standards, stray)))
        assert conn.execute("SELECT count(*) FROM stage_standards").fetchone() == (0,)


def test_loading_again_with_another_clock_replaces_the_sort_plan_versions(db_dsn: str) -> None:
    """A sort plan version loaded again is replaced whole: same versions, new times."""
    first = PlaybackClock(datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
    later = PlaybackClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        load(conn, SCENARIO.reference_data(first))
        load(conn, SCENARIO.reference_data(later))
        plans = conn.execute(
            "SELECT version, effective_from FROM sort_plans WHERE site_id = 'LHR1' ORDER BY version"
        ).fetchall()
        entries = conn.execute("SELECT count(*) FROM sort_plan_entries").fetchone()
    assert [v for v, _ in plans] == [1, 2]
    assert plans[0][1] == later.start
    assert entries == (sum(len(p.entries) for p in SCENARIO.sort_plans),)

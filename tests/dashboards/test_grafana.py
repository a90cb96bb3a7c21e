"""Grafana provisioning and dashboards: structure, and every panel's SQL run for real."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from tests.dashboards.grafana import expand

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))
NOW = datetime.now(UTC).replace(microsecond=0)


def _datasource_uids() -> set[str]:
    files = (ROOT / "dashboards" / "provisioning" / "datasources").glob("*.yml")
    return {ds["uid"] for f in files for ds in yaml.safe_load(f.read_text())["datasources"]}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.stem, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


def test_there_are_dashboards_and_a_provider_for_them() -> None:
    """Dashboards exist and the provider loads them from a folder."""
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/parceltrack.yml").read_text()
    )
    assert provider["providers"][0]["type"] == "file"
    assert {p.stem for p in DASHBOARDS} >= {"centre", "devices"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_structure(path: Path) -> None:
    """Unique panel ids, grid positions inside the 24-column grid without overlap, and
    every datasource uid the provisioned one."""
    board = json.loads(path.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, f"panel {panel['id']} overlaps another"
        cells |= area
        uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
        assert uids <= _datasource_uids()
    for var in board["templating"]["list"]:
        assert var["datasource"]["uid"] in _datasource_uids()


@pytest.fixture
def filled_dsn(storage_dsn: str) -> str:
    """A database with a site, read points, devices, scans, alerts and health in it."""
    with psycopg.connect(storage_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('LHR1', 'Heathrow')")
        for rp, zone, stage in [
            ("LHR1-TUN1", "tunnel", "tunnel"),
            ("LHR1-CHU01", "chute", "chute"),
        ]:
            conn.execute(
                "INSERT INTO read_points (read_point_id, site_id, zone, stage) "
                "VALUES (%s, 'LHR1', %s, %s)",
                (rp, zone, stage),
            )
            conn.execute(
                "INSERT INTO devices (device_id, site_id, read_point_id, kind) "
                "VALUES (%s, 'LHR1', %s, 'barcode')",
                (f"dev-{rp}", rp),
            )
        events = [
            ScanEvent(
                device=f"dev-{rp}",
                boot=1,
                seq=i,
                ts=NOW - timedelta(seconds=30 * i),
                site="LHR1",
                read_point=rp,
                kind=EventKind.NOREAD if i % 7 == 0 else EventKind.READ,
                tracking_id=None if i % 7 == 0 else f"CP{i % 20:09d}GB",
            )
            for i in range(100)
            for rp in ("LHR1-TUN1", "LHR1-CHU01")
        ]
        with conn.transaction():
            write_scans(conn, events, ScanPartitions(has_timescale(conn)))
        conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, tracking_id, opened_at) "
            "VALUES ('missort:CP000000001GB', 'missort', 'LHR1', 'CP000000001GB', %s)",
            (NOW - timedelta(minutes=5),),
        )
        conn.execute(
            "INSERT INTO device_health (device_id, site_id, agent_id, reported_at, connected, "
            "health) VALUES ('dev-LHR1-TUN1', 'LHR1', 'agent-1', %s, true, "
            '\'{"frames_bad": 2, "outbox_depth": 5, "outbox_oldest_s": 1.5}\')',
            (NOW,),
        )
        conn.execute("INSERT INTO agent_status VALUES ('agent-1', 'LHR1', 'online', %s)", (NOW,))
        if has_timescale(conn):
            conn.execute("CALL refresh_continuous_aggregate('scan_throughput_1m', NULL, NULL)")
    return storage_dsn


@pytest.mark.parametrize(
    ("board", "panel"), _panels(), ids=[f"{b}-{p['id']}" for b, p in _panels()]
)
def test_panel_sql_runs_on_the_real_schema_and_returns_rows(
    filled_dsn: str, board: str, panel: dict[str, Any]
) -> None:
    """Each panel's query, macros expanded as Grafana would, runs and returns data."""
    with psycopg.connect(filled_dsn) as conn:
        timescale = has_timescale(conn)
        for target in panel["targets"]:
            sql = expand(
                target["rawSql"],
                NOW - timedelta(hours=1),
                NOW + timedelta(minutes=1),
                "1m",
                {"site": ["LHR1"]},
                timescale,
            )
            rows = conn.execute(sql.encode()).fetchall()
            assert rows, f"{board} panel {panel['id']} ({panel['title']}) returned no rows"


def test_site_variable_query_runs(filled_dsn: str) -> None:
    """The dashboards' site variable lists the sites."""
    board = json.loads(DASHBOARDS[0].read_text())
    [site] = [v for v in board["templating"]["list"] if v["name"] == "site"]
    with psycopg.connect(filled_dsn) as conn:
        assert conn.execute(site["query"].encode()).fetchall() == [("LHR1",)]

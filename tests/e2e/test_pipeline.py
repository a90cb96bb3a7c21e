import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.security import key_hash, new_key
from composition.pipeline import Pipeline
from firmware_sim.scenario import ScenarioConfig, generate
from tests.counting import count
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SCENARIO = generate(
    ScenarioConfig.barcode_only(
        seed=11, parcels=40, rate_per_s=4.0, lost_rate=0.15, noread_rate=0.05
    )
)
SPEED = 10.0


@pytest.fixture(scope="module")
def pipeline(services_dir: Path) -> Iterator[Pipeline]:
    # Stage standard 6 s > the slowest transit (36 s) at 10x; missing 4 s after that.
    p = Pipeline(
        services_dir / "e2e", SCENARIO, speed=SPEED, overdue_after_s=6.0, missing_after_s=4.0
    )
    p.start()
    yield p
    p.stop()


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_rows(dsn: str, sql: str, expected: int, timeout: float) -> int:
    """Wait until `sql` counts at least `expected` rows; the count then."""
    wait_until(
        lambda: count(dsn, sql) >= expected, timeout, f"{expected} from {sql!r}", interval=0.5
    )
    return count(dsn, sql)


def test_every_simulated_read_is_stored_exactly_once(pipeline: Pipeline) -> None:
    """Each frame the virtual scanners sent is one row in scans: none lost, none doubled."""
    duration = SCENARIO.reads[-1].at / SPEED
    stored = _wait_rows(
        pipeline.dsn, "SELECT count(*) FROM scans", len(SCENARIO.reads), duration + 60
    )
    assert stored == len(SCENARIO.reads)
    with psycopg.connect(pipeline.dsn) as conn:
        distinct = conn.execute("SELECT count(DISTINCT event_id) FROM scans").fetchone()
        noreads = conn.execute("SELECT count(*) FROM scans WHERE kind = 'noread'").fetchone()
    assert distinct == (len(SCENARIO.reads),)
    assert noreads == (sum(1 for r in SCENARIO.reads if r.code is None),)


def test_a_simulated_parcel_is_found_through_http(pipeline: Pipeline) -> None:
    """A parcel that went through the centre shows its door as last location, via the API."""
    lost = {f.tracking_id for f in SCENARIO.faults if f.kind == "lost"}
    parcel = next(m for m in SCENARIO.manifest if m.tracking_id not in lost)
    expected = [r.read_point for r in SCENARIO.reads if r.code == parcel.tracking_id]
    url = f"{pipeline.api_url}/v1/parcels/{parcel.tracking_id}"

    def scans() -> list[dict[str, str]]:
        status, body = _get(url)
        # Scans only: the timeline also starts with the manifest's acceptance.
        timeline = body.get("timeline", []) if status == 200 else []
        return [e for e in timeline if e["kind"] != "accepted"]  # type: ignore[union-attr]

    wait_until(lambda: len(scans()) == len(expected), 60, "the parcel's scans", interval=0.5)
    status, body = _get(url)
    assert status == 200
    assert [e["read_point"] for e in scans()] == expected
    assert body["last_location"]["zone"] == "door"  # type: ignore[index]


def test_lost_parcels_raise_missing_alerts(pipeline: Pipeline) -> None:
    """Every parcel lost after a read point gets exactly one missing alert there, and no
    parcel that went through is reported missing or delayed."""
    lost = {f.tracking_id: f.read_point for f in SCENARIO.faults if f.kind == "lost"}
    assert lost, "the scenario must inject at least one lost parcel"
    _wait_rows(pipeline.dsn, "SELECT count(*) FROM alerts WHERE kind = 'missing'", len(lost), 90)
    with psycopg.connect(pipeline.dsn) as conn:
        rows = conn.execute(
            "SELECT tracking_id, read_point_id FROM alerts WHERE kind = 'missing'"
        ).fetchall()
        delayed = conn.execute(
            "SELECT DISTINCT tracking_id FROM alerts WHERE kind = 'delay'"
        ).fetchall()
    assert dict(rows) == lost
    assert len(rows) == len(lost)
    assert {t for (t,) in delayed} <= set(lost)


def test_every_alert_change_is_published_on_mqtt(pipeline: Pipeline) -> None:
    """The detector's publisher gets a PUBACK for every logged alert change."""
    _wait_rows(pipeline.dsn, "SELECT count(*) FROM alerts", 1, 90)

    def cursors() -> tuple[int | None, int | None]:
        """The last logged alert change and the last one the broker acknowledged."""
        with psycopg.connect(pipeline.dsn) as conn:
            logged = conn.execute("SELECT max(event_id) FROM alert_events").fetchone()
            published = conn.execute(
                "SELECT event_id FROM alert_publish_cursor WHERE publisher = 'detect'"
            ).fetchone()
        return (logged[0] if logged else None), (published[0] if published else None)

    def caught_up() -> bool:
        logged, published = cursors()
        return logged is not None and published is not None and published >= logged

    wait_until(caught_up, 30, "the publisher's cursor at the last alert change", interval=0.5)


def _snapshot_parcels(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT body FROM figure_snapshots WHERE days = 7").fetchone()
    if row is None:
        return 0
    rates = next(f for f in row[0]["figures"] if f["name"] == "rates")
    at = rates["columns"].index("parcels_seen")
    return sum(r[at] for r in rates["rows"])


def test_the_manager_figures_are_kept_computed_ahead(pipeline: Pipeline) -> None:
    """The pipeline's `parceltrack quality` keeps the manager page's 7-day figures
    computed ahead with the simulated parcels in them, and the API serves them."""
    wait_until(lambda: _snapshot_parcels(pipeline.dsn) > 0, 120, "figures with parcels")
    key = new_key()
    with psycopg.connect(pipeline.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, name, role) VALUES (%s, %s, 'e2e', 'manager')",
            (key_hash(key), key[:7]),
        )
    request = urllib.request.Request(
        f"{pipeline.api_url}/v1/manager/figures?days=7", headers={"X-API-Key": key}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["computed_at"] is not None
    assert body["summary"]["no_read_rate"] is not None

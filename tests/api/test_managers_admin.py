"""Managers' KPIs (JSON and CSV) and administration (manifests, standards, sort plans,
layout, API keys)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from enum import StrEnum

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.tracking import add_working_days
from parceltrack.layout import Stage, Zone
from tests.api.conftest import SITE, Seeded, auth


def test_kpis_per_site_shift_read_point_and_stage(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """The scorecard counts the seeded parcels: one of two chuted parcels mis-sorted, 3 of
    the tunnel's 7 scans no-reads, one dispatched on time, the mis-sort alert opened."""
    body = client.get("/v1/kpis", params={"site": SITE}, headers=auth(keys["manager"])).json()
    sites = body["sites"]
    assert sum(r["parcels_seen"] for r in sites) == 4
    assert sum(r["alerts_opened"] for r in sites) == 2
    assert sum(r["alerts_resolved"] for r in sites) == 1
    rows_with_chutes = [r for r in sites if r["mis_sort_rate"] is not None]
    assert [r["mis_sort_rate"] for r in rows_with_chutes] == [0.5]
    assert [r["on_time_rate"] for r in sites if r["on_time_rate"] is not None] == [1.0]
    tunnel = [r for r in body["read_points"] if r["read_point_id"] == f"{SITE}-TUN1"]
    assert sum(r["reads"] for r in tunnel) == 4 and sum(r["noreads"] for r in tunnel) == 3
    stages = {r["stage"]: r for r in body["stages"]}
    # From the sorter to the chute the seeded parcels took 10 s each.
    assert stages["sort"]["dwell_p50_s"] == pytest.approx(10.0)
    assert {r["shift"] for r in sites} <= {"early", "late", "night"}


def test_kpis_export_as_csv(client: TestClient, seeded: Seeded, keys: dict[str, str]) -> None:
    """format=csv or Accept: text/csv gives one table as CSV with a header row."""
    by_param = client.get(
        "/v1/kpis", params={"format": "csv", "table": "read_points"}, headers=auth(keys["manager"])
    )
    assert by_param.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(by_param.text)))
    assert {r["read_point_id"] for r in rows} >= {f"{SITE}-IND1", f"{SITE}-TUN1"}
    by_accept = client.get("/v1/kpis", headers={**auth(keys["manager"]), "Accept": "text/csv"})
    assert by_accept.text.splitlines()[0].startswith("site_id,day,shift,parcels_seen")


@pytest.mark.parametrize(
    ("start", "days"),
    [
        ("2026-11-20T10:00:00+00:00", 2),  # Friday: J+2 is Tuesday
        ("2026-11-21T23:30:00+00:00", 1),  # Saturday: J+1 is Monday
        ("2026-11-23T08:00:00+00:00", 0),
        ("2026-11-24T08:00:00+00:00", 5),
    ],
    ids=["friday-j2", "saturday-j1", "j0", "j5"],
)
def test_working_days_agree_in_python_and_sql(seeded: Seeded, start: str, days: int) -> None:
    """The due time is the same whether the API (Python) or the KPIs (SQL) compute it."""
    t = datetime.fromisoformat(start)
    with psycopg.connect(seeded.dsn) as conn:
        conn.execute("SET TIME ZONE 'Europe/Paris'")  # the session zone must not matter
        row = conn.execute("SELECT add_working_days(%s, %s)", (t, days)).fetchone()
    assert row is not None
    assert row[0] == add_working_days(t, days)
    assert add_working_days(t, days).astimezone(UTC).isoweekday() < 6 or days == 0


def test_manifest_csv_upload_reports_rejected_rows(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Valid rows load; rows with a bad check digit, unknown class or missing destination are
    reported by number with every reason."""
    body = (
        "tracking_id,service_class,destination,origin_site\r\n"
        "RR473124829GB,standard,LON,LHR1\r\n"
        "RR473124828GB,standard,LON,LHR1\r\n"
        "EE471108151FR,gold,,LHR1\r\n"
        "EE123456785CN,express,MAN,\r\n"
    )
    report = client.post(
        "/v1/admin/manifests",
        content=body,
        headers={**auth(keys["admin"]), "Content-Type": "text/csv"},
    ).json()
    assert report["accepted"] == 2
    rejected = {r["row"]: r["errors"] for r in report["rejected"]}
    assert list(rejected) == [2, 3]
    assert "check digit" in rejected[2][0]
    assert any("unknown service class" in e for e in rejected[3])
    assert any("destination is missing" in e for e in rejected[3])
    found = client.get("/v1/parcels/EE123456785CN").json()
    assert found["status"] == "accepted" and found["destination"] == "MAN"


def test_manifest_json_upload_and_malformed_bodies(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """JSON rows validate the same way; non-JSON, non-list and other media types are refused."""
    h = auth(keys["admin"])
    report = client.post(
        "/v1/admin/manifests",
        json=[
            {"tracking_id": "rr473124829gb", "service_class": "express", "destination": "GLA"},
            {"tracking_id": 5, "service_class": "express", "destination": "GLA"},
        ],
        headers=h,
    ).json()
    assert report["accepted"] == 1 and report["rejected"][0]["row"] == 2
    bad = {"Content-Type": "application/json", **h}
    assert client.post("/v1/admin/manifests", content="{", headers=bad).status_code == 422
    assert client.post("/v1/admin/manifests", content="{}", headers=bad).status_code == 422
    other = {"Content-Type": "text/plain", **h}
    assert client.post("/v1/admin/manifests", content="x", headers=other).status_code == 415


def test_sort_plans_are_versioned(client: TestClient, seeded: Seeded, keys: dict[str, str]) -> None:
    """Each upload is the next version; a chute that does not exist is 409, not stored."""
    h = auth(keys["admin"])
    plan = {
        "effective_from": "2026-12-01T00:00:00Z",
        "entries": [{"destination": "LON", "chute_read_point_id": f"{SITE}-CHU02"}],
    }
    made = client.post(f"/v1/admin/sites/{SITE}/sort-plans", json=plan, headers=h).json()
    assert made["version"] == 2
    plan["entries"] = [{"destination": "LON", "chute_read_point_id": "NOPE"}]
    assert (
        client.post(f"/v1/admin/sites/{SITE}/sort-plans", json=plan, headers=h).status_code == 409
    )
    versions = client.get(f"/v1/admin/sites/{SITE}/sort-plans", headers=h).json()
    assert [p["version"] for p in versions] == [2, 1]


def test_service_classes_standards_and_layout(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Admins set delivery and stage standards, sites, read points and devices."""
    h = auth(keys["admin"])
    assert (
        client.put(
            "/v1/admin/service-classes/economy", json={"delivery_days": 4}, headers=h
        ).status_code
        == 200
    )
    assert {
        c["service_class"] for c in client.get("/v1/admin/service-classes", headers=h).json()
    } >= {"economy"}
    standard = {"site_id": SITE, "stage": "sort", "service_class": "economy", "max_seconds": 90}
    assert client.put("/v1/admin/stage-standards", json=standard, headers=h).status_code == 200
    assert (
        standard | {"max_seconds": 90.0}
        in client.get("/v1/admin/stage-standards", headers=h).json()
    )
    assert (
        client.put(
            "/v1/admin/sites/CDG1", json={"name": "Roissy", "timezone": "Europe/Paris"}, headers=h
        ).status_code
        == 200
    )
    assert (
        client.put(
            "/v1/admin/sites/XXX1", json={"name": "Nowhere", "timezone": "Mars/Olympus"}, headers=h
        ).status_code
        == 422
    )
    rp = {"site_id": "CDG1", "zone": "induction", "stage": "induction", "description": "In 1"}
    assert client.put("/v1/admin/read-points/CDG1-IND1", json=rp, headers=h).status_code == 200
    dev = {"site_id": "CDG1", "read_point_id": "CDG1-IND1", "kind": "mercury"}
    assert client.put("/v1/admin/devices/CDG1-gate1", json=dev, headers=h).status_code == 200
    dev["read_point_id"] = "CDG1-NOPE"
    assert client.put("/v1/admin/devices/CDG1-gate2", json=dev, headers=h).status_code == 409


READ_POINT = {"site_id": SITE, "zone": "chute", "stage": "chute"}
STANDARD = {"site_id": SITE, "stage": "sort", "service_class": "economy", "max_seconds": 9}


@pytest.mark.parametrize(
    ("url", "body", "field", "enum"),
    [
        pytest.param(f"/v1/admin/read-points/{SITE}-X1", READ_POINT, "zone", Zone, id="zone"),
        pytest.param(f"/v1/admin/read-points/{SITE}-X1", READ_POINT, "stage", Stage, id="stage"),
        pytest.param("/v1/admin/stage-standards", STANDARD, "stage", Stage, id="standard"),
    ],
)
def test_an_unknown_zone_or_stage_is_refused_listing_the_allowed_ones(
    client: TestClient,
    seeded: Seeded,
    keys: dict[str, str],
    url: str,
    body: dict[str, object],
    field: str,
    enum: type[StrEnum],
) -> None:
    """An unknown zone or stage is a 422 naming the field and every allowed value."""
    response = client.put(url, json=body | {field: "slide"}, headers=auth(keys["admin"]))
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", field]
    assert all(repr(member.value) in error["msg"] for member in enum), error["msg"]


def test_a_stage_standard_for_a_stage_the_site_lacks_is_refused(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A standard for a stage no read point of the site has is a 422, not stored."""
    standard = STANDARD | {"stage": "customs"}
    response = client.put("/v1/admin/stage-standards", json=standard, headers=auth(keys["admin"]))
    assert response.status_code == 422
    assert "customs" in response.json()["detail"] and SITE in response.json()["detail"]
    with psycopg.connect(seeded.dsn) as conn:
        stored = conn.execute("SELECT 1 FROM stage_standards WHERE stage = 'customs'").fetchone()
    assert stored is None


def test_a_stage_standard_for_an_unknown_site_is_a_conflict_naming_it(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A standard for a site that does not exist is a 409 naming the site, as any missing
    reference is, not the 422 of a known site without a read point at the stage."""
    standard = STANDARD | {"site_id": "NOPE1", "service_class": "express"}
    response = client.put("/v1/admin/stage-standards", json=standard, headers=auth(keys["admin"]))
    assert response.status_code == 409
    assert "NOPE1" in response.json()["detail"]


def test_api_keys_are_shown_once_stored_hashed_and_revocable(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A new key works at once, is absent from the table and the listing, and stops on revoke."""
    h = auth(keys["admin"])
    made = client.post(
        "/v1/admin/api-keys", json={"name": "carol", "role": "controller"}, headers=h
    )
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["key_id"]
    assert client.get("/v1/alerts", headers=auth(key)).status_code == 200
    listing = client.get("/v1/admin/api-keys", headers=h).text
    assert key not in listing
    with psycopg.connect(seeded.dsn) as conn:
        dump = str(conn.execute("SELECT * FROM api_keys").fetchall())
    assert key not in dump
    assert client.delete(f"/v1/admin/api-keys/{key_id}", headers=h).status_code == 200
    assert client.get("/v1/alerts", headers=auth(key)).status_code == 401


def test_words_stored_before_the_enumerations_are_listed_as_they_are(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A read point or standard stored with a word outside the enumerations (before they
    were fixed) is listed as stored, not turned into a 500."""
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO read_points (read_point_id, site_id, zone, stage) "
            "VALUES ('LEGACY-RP1', %s, 'Bench', 'manual sort')",
            (SITE,),
        )
        conn.execute(
            "INSERT INTO stage_standards (site_id, stage, service_class, max_seconds) "
            "VALUES (%s, 'manual sort', 'express', 60)",
            (SITE,),
        )
        try:
            h = auth(keys["admin"])
            points = client.get("/v1/admin/read-points", headers=h)
            standards = client.get("/v1/admin/stage-standards", headers=h)
        finally:
            conn.execute("DELETE FROM stage_standards WHERE stage = 'manual sort'")
            conn.execute("DELETE FROM read_points WHERE read_point_id = 'LEGACY-RP1'")
    assert points.status_code == 200 and standards.status_code == 200
    legacy = next(r for r in points.json() if r["read_point_id"] == "LEGACY-RP1")
    assert (legacy["zone"], legacy["stage"]) == ("Bench", "manual sort")
    assert any(s["stage"] == "manual sort" for s in standards.json())

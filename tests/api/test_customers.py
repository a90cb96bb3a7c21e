"""Customers: status, precise location, timeline with UPU codes, ETA, EPCIS, feedback."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from composition.services import PrivateMosquitto
from parceltrack.alerts import AlertKind
from tests.api.conftest import SCENARIO, SITE, Seeded, auth, settings_for

DATA = Path(__file__).resolve().parents[1] / "data"


def test_parcel_at_the_sorter_is_in_sorting_with_its_precise_location(
    client: TestClient, seeded: Seeded
) -> None:
    """A parcel last read at the sorter is in_sorting, at site, zone, read point and device."""
    body = client.get(f"/v1/parcels/{seeded.in_sorting}").json()
    assert body["status"] == "in_sorting"
    where = body["last_location"]
    assert (where["site"], where["zone"], where["read_point"]) == (SITE, "sorter", f"{SITE}-SRT1")
    assert where["device"] == f"{SITE}-SRT1-dev"
    assert where["description"].startswith("Tilt-tray")
    assert where["site_name"] == f"Sorting centre {SITE}"


def test_parcel_between_read_points_reports_its_conveyor_segment(
    client: TestClient, seeded: Seeded
) -> None:
    """A parcel read at the tunnel is on the segment from the tunnel to the sorter."""
    segment = client.get(f"/v1/parcels/{seeded.on_conveyor}").json()["last_location"]["segment"]
    assert segment["from_read_point"] == f"{SITE}-TUN1"
    assert segment["to_read_point"] == f"{SITE}-SRT1"
    assert segment["to_description"].startswith("Tilt-tray")
    assert segment["expected_by"] is not None  # the stage standard is 600 s


def test_timeline_carries_upu_codes_into_and_out_of_the_sorting_centre(
    client: TestClient, seeded: Seeded
) -> None:
    """Acceptance is EMA, the first scan at the site EDD, the outbound door EDE, the rest none."""
    body = client.get(f"/v1/parcels/{seeded.dispatched}").json()
    codes = [(e["kind"], (e["upu_event"] or {}).get("code")) for e in body["timeline"]]
    assert codes == [
        ("accepted", "EMA"),
        ("read", "EDD"),
        ("read", None),
        ("read", None),
        ("read", None),
        ("read", "EDE"),
    ]
    assert body["status"] == "dispatched"


def test_delivery_standard_due_eta_and_on_time(client: TestClient, seeded: Seeded) -> None:
    """The delivery standard gives the due time; a parcel within its stage standards is on time."""
    body = client.get(f"/v1/parcels/{seeded.in_sorting}").json()
    delivery = body["delivery"]
    days = {c.service_class: c.delivery_days for c in SCENARIO.service_classes}
    assert delivery["delivery_days"] == days[body["service_class"]]
    assert delivery["eta_source"] == "stage_standards"
    assert delivery["on_time"] is True
    assert delivery["eta"] <= delivery["due"]


def test_parcel_with_an_open_missort_alert_is_an_exception(
    client: TestClient, seeded: Seeded
) -> None:
    """An open alert other than a delay makes the status exception; a resolved one does not."""
    assert client.get(f"/v1/parcels/{seeded.missorted}").json()["status"] == "exception"
    assert client.get(f"/v1/parcels/{seeded.in_sorting}").json()["status"] == "in_sorting"


def test_parcel_with_the_detectors_open_delay_alert_is_delayed(
    client: TestClient, seeded: Seeded
) -> None:
    """A parcel whose only open alert is a delay, as the detector opens it, is delayed."""
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            (
                f"delay:{seeded.in_sorting}",
                AlertKind.DELAY,
                SITE,
                f"{SITE}-SRT1",
                seeded.in_sorting,
            ),
        )
    assert client.get(f"/v1/parcels/{seeded.in_sorting}").json()["status"] == "delayed"


def test_manifest_only_parcel_is_accepted(client: TestClient, seeded: Seeded) -> None:
    """A parcel in the manifest but never scanned is accepted, with no location."""
    body = client.get(f"/v1/parcels/{seeded.accepted}").json()
    assert body["status"] == "accepted" and body["last_location"] is None


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("RR473124828GB", "check digit"),
        ("RR47312", "2 letters, 9 digits"),
        ("' OR 1=1 --", "not an S10"),
    ],
    ids=["bad-check-digit", "malformed", "injection"],
)
@pytest.mark.parametrize("suffix", ["", "/epcis"], ids=["lookup", "epcis"])
def test_invalid_numbers_get_422_saying_what_is_wrong(
    client: TestClient, seeded: Seeded, number: str, message: str, suffix: str
) -> None:
    """Malformed and check-digit-invalid numbers are 422 with an explanation."""
    response = client.get(f"/v1/parcels/{number}{suffix}")
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.parametrize("suffix", ["", "/epcis"], ids=["lookup", "epcis"])
def test_unknown_parcel_is_404_revealing_nothing(
    client: TestClient, seeded: Seeded, suffix: str
) -> None:
    """A valid number nobody knows is 404 with a plain message."""
    response = client.get(f"/v1/parcels/RR473124829GB{suffix}")
    assert response.status_code == 404
    assert response.json() == {"detail": "no parcel with that tracking number"}


def test_lookups_beyond_the_client_budget_get_429_with_retry_after(
    seeded: Seeded, keys: dict[str, str], mqtt_server: PrivateMosquitto
) -> None:
    """With a burst of 3 the fourth lookup is 429 with Retry-After; a keyed client has its own
    budget, and an invalid key buys none (401)."""
    app = create_app(settings_for(seeded.dsn, mqtt_server, rate_per_s=0.1, burst=3))
    url = f"/v1/parcels/{seeded.in_sorting}"
    with TestClient(app) as c:
        codes = [c.get(url).status_code for _ in range(4)]
        limited = c.get(url)
        keyed = c.get(url, headers=auth(keys["customer"]))
        forged = c.get(url, headers={"X-API-Key": "pt_made_up"})
    assert codes == [200, 200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert keyed.status_code == 200
    assert forged.status_code == 401


def test_no_public_endpoint_lists_parcels(client: TestClient, seeded: Seeded) -> None:
    """The OpenAPI schema has no parcel collection, and /v1/parcels is not a route."""
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.rstrip("/") == "/v1/parcels"]
    assert client.get("/v1/parcels").status_code in (404, 405)


@pytest.fixture(scope="module")
def epcis_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / "epcis-2.0-json-schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_format_checker_really_checks_uris_and_times(
    epcis_validator: jsonschema.protocols.Validator,
) -> None:
    """The validator rejects a bad URI and a bad time, so format checks are not silently off."""
    doc = {
        "@context": "https://ref.gs1.org/standards/epcis/epcis-context.jsonld",
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "yesterday",
        "epcisBody": {"eventList": []},
    }
    assert not epcis_validator.is_valid(doc)
    doc["creationDate"] = "2026-11-24T10:00:00Z"
    assert epcis_validator.is_valid(doc)
    doc["@context"] = "not a uri"
    assert not epcis_validator.is_valid(doc)


def test_epcis_document_validates_against_the_official_schema(
    client: TestClient, seeded: Seeded, epcis_validator: jsonschema.protocols.Validator
) -> None:
    """The parcel's scans come out as EPCIS 2.0 ObjectEvents that the GS1 JSON Schema accepts."""
    response = client.get(f"/v1/parcels/{seeded.dispatched}/epcis")
    assert response.headers["content-type"].startswith("application/ld+json")
    doc = response.json()
    epcis_validator.validate(doc)
    events = doc["epcisBody"]["eventList"]
    assert len(events) == 5
    assert events[0]["bizStep"] == "arriving"
    assert events[-1]["bizStep"] == "departing"
    assert events[0]["epcList"] == [f"urn:parceltrack:s10:{seeded.dispatched}"]
    assert events[0]["readPoint"]["id"] == f"urn:parceltrack:rp:{SITE}-IND1"
    assert len({e["eventID"] for e in events}) == 5


def test_epcis_context_names_the_terms_the_document_uses() -> None:
    """The JSON-LD context copied beside the schema defines the EPCIS terms our documents use."""
    context = json.loads((DATA / "epcis-2.0-context.jsonld").read_text())["@context"]
    for term in ("ObjectEvent", "eventTime", "epcList", "bizStep", "readPoint", "bizLocation"):
        assert term in context


def test_feedback_is_stored_with_the_parcel_telemetry_of_that_moment(
    client: TestClient, seeded: Seeded
) -> None:
    """A complaint is 201 and keeps a snapshot of the parcel view at the time it was made."""
    response = client.post(
        f"/v1/parcels/{seeded.missorted}/feedback",
        json={"kind": "complaint", "message": "It went to the wrong city", "contact": "a@b.c"},
    )
    assert response.status_code == 201
    import psycopg

    with psycopg.connect(seeded.dsn) as conn:
        row = conn.execute(
            "SELECT snapshot, state, site_id FROM feedback WHERE feedback_id = %s",
            (response.json()["feedback_id"],),
        ).fetchone()
    assert row is not None
    snapshot, state, site = row
    assert snapshot["status"] == "exception" and state == "open" and site == SITE
    assert snapshot["last_location"]["zone"] == "chute"


def test_feedback_on_an_unknown_parcel_is_404(client: TestClient, seeded: Seeded) -> None:
    """Feedback needs a known parcel; an unknown one is the same plain 404."""
    response = client.post(
        "/v1/parcels/RR473124829GB/feedback", json={"kind": "praise", "message": "thanks"}
    )
    assert response.status_code == 404


def test_detector_eta_is_shown_when_the_detection_service_publishes_one(
    seeded: Seeded, mqtt_server: PrivateMosquitto
) -> None:
    """With detection's parcel_eta table (issue 6), the lookup adds its site-departure ETA."""
    import psycopg

    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        # The table as detection's migration 40 defines it (IF NOT EXISTS: once merged,
        # the migration has made it already).
        conn.execute(
            "CREATE TABLE IF NOT EXISTS parcel_eta (tracking_id text PRIMARY KEY, "
            "site_id text NOT NULL, read_point_id text NOT NULL, stage text NOT NULL, "
            "entered_at timestamptz NOT NULL, next_stage text, next_due timestamptz, "
            "eta timestamptz, eta_p90 timestamptz, delivery_due timestamptz, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at, eta) "
            "VALUES (%s, %s, %s, 'sort', now(), '2030-01-01T00:00:00Z')",
            (seeded.in_sorting, SITE, f"{SITE}-SRT1"),
        )
    with TestClient(create_app(settings_for(seeded.dsn, mqtt_server))) as c:
        with_eta = c.get(f"/v1/parcels/{seeded.in_sorting}").json()["delivery"]
        without = c.get(f"/v1/parcels/{seeded.on_conveyor}").json()["delivery"]
    assert with_eta["leaves_site_eta"].startswith("2030-01-01T00:00:00")
    assert without["leaves_site_eta"] is None

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import ApiSettings, create_app
from composition.services import PrivateMosquitto
from firmware_sim.scenario import generate
from ingest.store import ScanPartitions, write_scans
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from storage.reference import load_layout, load_manifest
from tests.waiting import wait_until

SCENARIO = generate(seed=3, parcels=5)
PARCEL = SCENARIO.manifest[0]


@pytest.fixture
def client(db_dsn: str, mqtt_server: PrivateMosquitto) -> Iterator[TestClient]:
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    route = ["LHR1-IND1", "LHR1-TUN1", "LHR1-SRT1"]
    events = [
        ScanEvent(
            device=f"dev-{rp}",
            boot=1,
            seq=i,
            ts=t0 + timedelta(seconds=10 * i),
            site="LHR1",
            read_point=rp,
            kind=EventKind.READ,
            code=PARCEL.tracking_id,
            tracking_id=PARCEL.tracking_id,
        )
        for i, rp in enumerate(route)
    ]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        data = SCENARIO.reference_data()
        load_layout(conn, data)
        load_manifest(conn, data.manifest)
        with conn.transaction():
            write_scans(conn, events, ScanPartitions(has_timescale(conn)))
    app = create_app(ApiSettings(dsn=db_dsn, broker=BrokerAddress.from_url(mqtt_server.url)))
    with TestClient(app) as c:
        yield c


def test_parcel_lookup_gives_last_location_and_timeline(client: TestClient) -> None:
    """A known parcel returns its last read point (with description) and ordered timeline."""
    body = client.get(f"/v1/parcels/{PARCEL.tracking_id}").json()
    assert body["destination"] == PARCEL.destination
    scans = [e["read_point"] for e in body["timeline"] if e["kind"] != "accepted"]
    assert scans == ["LHR1-IND1", "LHR1-TUN1", "LHR1-SRT1"]
    last = body["last_location"]
    assert (last["site"], last["read_point"], last["zone"]) == ("LHR1", "LHR1-SRT1", "sorter")
    assert last["device"] == "dev-LHR1-SRT1" and last["description"].startswith("Tilt-tray")


def test_lowercase_and_spaced_numbers_are_normalised(client: TestClient) -> None:
    """Customers type numbers in lower case with spaces; the lookup still finds the parcel."""
    spaced = " ".join([PARCEL.tracking_id[:2], PARCEL.tracking_id[2:7], PARCEL.tracking_id[7:]])
    response = client.get(f"/v1/parcels/{spaced.lower()}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("RR473124828GB", "check digit"),
        ("RR47312", "2 letters, 9 digits"),
        ("' OR 1=1 --", "not an S10"),
    ],
    ids=["bad-check-digit", "malformed", "injection"],
)
def test_invalid_numbers_get_422_saying_what_is_wrong(
    client: TestClient, number: str, message: str
) -> None:
    """Malformed and check-digit-invalid numbers are 422 with an explanation."""
    response = client.get(f"/v1/parcels/{number}")
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_unknown_parcel_is_404_revealing_nothing(client: TestClient) -> None:
    """A valid number nobody knows is 404 with a plain message."""
    response = client.get("/v1/parcels/RR473124829GB")
    assert response.status_code == 404
    assert response.json() == {"detail": "no parcel with that tracking number"}


def test_healthz_reports_database_and_broker(client: TestClient) -> None:
    """With both reachable, healthz is 200 and says so."""
    wait_until(lambda: client.get("/healthz").json()["broker"], 5, "the API on the broker")
    assert client.get("/healthz").json() == {"status": "ok", "database": True, "broker": True}


def test_healthz_is_503_when_the_broker_is_unreachable(db_dsn: str) -> None:
    """With no broker listening, healthz says degraded and names the broker."""
    from composition.services import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    app = create_app(ApiSettings(dsn=db_dsn, broker=BrokerAddress.from_url(url)))
    with TestClient(app) as c:
        response = c.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": True, "broker": False}

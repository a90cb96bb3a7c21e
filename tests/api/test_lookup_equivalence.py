"""The lookup's hot path (api/lookup.py) answers exactly what the pydantic ParcelView did.

The reference is `parcel_view(...).model_dump_json()`, the response before the hot
path existed; both are computed from the same database rows at the same `now`, for
parcels in every status, a parcel scanned but not in the manifest, and with and
without the detection service's ETA.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import lookup
from api.customers import parcel_view, read_parcel
from api.tracking import STATUSES
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from tests.api.conftest import SCENARIO, SITE, Seeded

UNLISTED = "RR473124829GB"  # scanned, never in the manifest
UNKNOWN = "EE471108151FR"  # neither


def _read(tracking: str, rp: str, seq: int, at: datetime) -> ScanEvent:
    return ScanEvent(
        device=f"{rp}-eq", boot=2, seq=seq, ts=at, site=SITE, read_point=rp,
        kind=EventKind.READ, code=tracking, tracking_id=tracking,
    )  # fmt: skip


def _more_statuses(seeded: Seeded) -> dict[str, str]:
    """Adds a sorted, a delayed, a delivered and an unlisted parcel; returns all by status."""
    spare = [m.tracking_id for m in SCENARIO.manifest][5:8]
    sorted_, delayed, delivered = spare
    now = datetime.now(UTC)
    chute = next(iter(SCENARIO.sort_plans[0].entries)).chute
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO read_points (read_point_id, site_id, zone, stage, description, position) "
            "VALUES (%s, %s, 'facility', 'delivery', 'Doorstep', 99)",
            (f"{SITE}-DLV1", SITE),
        )
        events = [
            _read(sorted_, f"{SITE}-IND1", 1, now - timedelta(seconds=90)),
            _read(sorted_, chute, 2, now - timedelta(seconds=30)),
            # At induction for longer than the 600 s standard.
            _read(delayed, f"{SITE}-IND1", 3, now - timedelta(seconds=2000)),
            _read(delivered, f"{SITE}-IND1", 4, now - timedelta(seconds=900)),
            _read(delivered, f"{SITE}-SRT1", 5, now - timedelta(seconds=880)),
            _read(delivered, f"{SITE}-DLV1", 6, now - timedelta(seconds=60)),
            _read(UNLISTED, f"{SITE}-IND1", 7, now - timedelta(seconds=20)),
            _read(UNLISTED, f"{SITE}-TUN1", 8, now - timedelta(seconds=10)),
        ]
        with conn.transaction():
            write_scans(conn, events, ScanPartitions(has_timescale(conn)))
        conn.execute(
            "INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at, "
            "eta, eta_p90, updated_at) VALUES (%s, %s, %s, 'sort', now(), "
            "now() + interval '20 min', now() + interval '40 min', now())",
            (seeded.in_sorting, SITE, f"{SITE}-SRT1"),
        )
    return {
        "accepted": seeded.accepted,
        "in_sorting": seeded.on_conveyor,
        "sorted": sorted_,
        "dispatched": seeded.dispatched,
        "delayed": delayed,
        "exception": seeded.missorted,
        "delivered": delivered,
    }


async def _both(dsn: str, s10: str, detector_eta: bool, now: datetime) -> tuple[Any, Any]:
    """(new bytes, reference bytes) for one parcel; None where the parcel is unknown."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        new = await lookup.parcel_json(conn, s10, detector_eta, now)
        record = await read_parcel(conn, s10, detector_eta)
    old = None if record is None else parcel_view(s10, record, now).model_dump_json().encode()
    return new, old


@pytest.mark.parametrize("detector_eta", [False, True], ids=["own-eta", "detector-eta"])
def test_hot_path_equals_the_pydantic_view_for_every_status(
    seeded: Seeded, detector_eta: bool
) -> None:
    """For a parcel in each status, and one scanned but unlisted, both paths give the
    same fields and the same bytes; an unknown parcel is None on both."""
    by_status = _more_statuses(seeded)
    now = datetime.now(UTC)
    seen = set()
    for s10 in [*by_status.values(), seeded.in_sorting, UNLISTED]:
        new, old = asyncio.run(_both(seeded.dsn, s10, detector_eta, now))
        assert old is not None and new is not None, s10
        fresh, reference = json.loads(new), json.loads(old)
        for field in reference:
            assert fresh[field] == reference[field], f"{s10}: {field}"
        assert fresh.keys() == reference.keys()
        assert new == old, s10
        seen.add(fresh["status"])
    assert seen == set(STATUSES)
    assert asyncio.run(_both(seeded.dsn, UNKNOWN, detector_eta, now)) == (None, None)
    statuses = {s: json.loads(asyncio.run(_both(seeded.dsn, p, detector_eta, now))[0])["status"]
                for s, p in by_status.items()}  # fmt: skip
    assert statuses == {s: s for s in by_status}


def test_route_serves_the_reference_view_byte_for_byte(client: TestClient, seeded: Seeded) -> None:
    """A delivered parcel's view does not depend on the clock: the HTTP body equals the
    reference exactly, and an unlisted parcel keeps its manifest fields null."""
    delivered = _more_statuses(seeded)["delivered"]
    now = datetime.now(UTC)
    _new, old = asyncio.run(_both(seeded.dsn, delivered, True, now))
    response = client.get(f"/v1/parcels/{delivered}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == old
    unlisted = client.get(f"/v1/parcels/{UNLISTED}").json()
    assert (unlisted["service_class"], unlisted["delivery"]["eta_source"]) == (None, "unknown")
    assert client.get(f"/v1/parcels/{UNKNOWN}").status_code == 404

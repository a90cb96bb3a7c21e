"""EPCIS webhook subscriptions to named queries: the subscription resource, and the
feed that queues each new event, once, in the delivery engine's outbound queue;
against a real PostgreSQL and the API's own background feed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient

from api import epcis_feed
from api.epcis import SORTING_STEP
from api.epcis_feed import KIND, subscriber
from ingest.store import ScanPartitions, write_scans
from notify.engine import EngineSettings
from notify.policy import RetryPolicy
from parceltrack import webhooks
from parceltrack.events import EventKind
from storage.migrations import has_timescale
from tests.api.conftest import SITE, Seeded, _scan, auth, partner_owning
from tests.notify.engine import running
from tests.notify.receivers import webhook_receiver
from tests.waiting import wait_until

DATA = Path(__file__).resolve().parents[1] / "data"
TOKEN = "a-secret-the-partner-chose-0123456789"


@pytest.fixture
def partner(client: TestClient, seeded: Seeded) -> Iterator[str]:
    """A partner key of account shop-a, which owns the dispatched parcel."""
    yield partner_owning(seeded.dsn, "shop-a", seeded.dispatched)


def _queued(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            "SELECT target, subscriber, idempotency_key, kind, body, secret "
            "FROM outbound_deliveries ORDER BY delivery_id"
        )
        return cur.fetchall()


def _subscribe(
    client: TestClient,
    key: str,
    query: dict[str, Any],
    dest: str = "http://127.0.0.1:9/epcis",
    **extra: Any,
) -> str:
    made = client.post("/epcis/queries", json={"name": "mine", "query": query}, headers=auth(key))
    assert made.status_code == 201, made.text
    sub = client.post(
        "/epcis/queries/mine/subscriptions",
        json={"dest": dest, "signatureToken": TOKEN, "stream": True, **extra},
        headers=auth(key),
    )  # fmt: skip
    assert sub.status_code == 201, sub.text
    body = sub.json()
    assert sub.headers["Location"] == f"/epcis/queries/mine/subscriptions/{body['subscriptionID']}"
    assert "signatureToken" not in body and TOKEN not in sub.text
    return str(body["subscriptionID"])


def test_a_partners_subscription_queues_its_parcels_events_once(
    client: TestClient, seeded: Seeded, partner: str
) -> None:
    """A subscription from before the seeded reads queues one signed EPCISQueryDocument
    of the partner's parcel's events (valid by the GS1 schema, named by the query and
    the subscription), for the delivery engine; the next rounds queue nothing more."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    sid = _subscribe(client, partner, {}, initialRecordTime=since)
    rows = wait_until(lambda: _queued(seeded.dsn), 15, "the subscription's first delivery")
    assert len(rows) == 1
    row = rows[0]
    assert (row["target"], row["kind"], row["secret"]) == ("http://127.0.0.1:9/epcis", KIND, TOKEN)
    assert row["subscriber"] == subscriber(sid)
    doc = json.loads(row["body"])
    schema = json.loads((DATA / "epcis-2.0-json-schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(doc)
    results = doc["epcisBody"]["queryResults"]
    assert (results["queryName"], results["subscriptionID"]) == ("mine", sid)
    events = results["resultsBody"]["eventList"]
    assert {e["epcList"][0] for e in events} == {f"urn:parceltrack:s10:{seeded.dispatched}"}
    assert len(events) == 5
    # What the partner would get by running the query itself, in record order.
    ran = client.get("/epcis/queries/mine/events", headers=auth(partner)).json()
    expected = ran["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert sorted(e["eventID"] for e in events) == sorted(e["eventID"] for e in expected)
    listed = client.get("/epcis/queries/mine/subscriptions", headers=auth(partner)).json()
    assert [(s["subscriptionID"], s["lastNotifiedAt"]) for s in listed] == [(sid, None)]


def test_new_reads_are_queued_in_a_delivery_of_their_own(
    client: TestClient, seeded: Seeded, partner: str
) -> None:
    """Reads recorded after the subscription starts arrive as a new delivery with only
    the new events; reads of another account's parcels never do."""
    sid = _subscribe(client, partner, {"EQ_bizStep": ["departing", SORTING_STEP]})
    now = datetime.now(UTC)
    new = [
        _scan(seeded.dispatched, f"{SITE}-IND1", 900, now, EventKind.READ),
        _scan(seeded.in_sorting, f"{SITE}-IND1", 901, now, EventKind.READ),  # not shop-a's
    ]
    with psycopg.connect(seeded.dsn) as conn, conn.transaction():
        write_scans(conn, new, ScanPartitions(has_timescale(conn)))
    rows = wait_until(lambda: _queued(seeded.dsn), 15, "the new read's delivery")
    assert len(rows) == 1 and rows[0]["subscriber"] == subscriber(sid)
    events = json.loads(rows[0]["body"])["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert [(e["epcList"][0], e["bizStep"]) for e in events] == [
        (f"urn:parceltrack:s10:{seeded.dispatched}", SORTING_STEP)  # back at induction
    ]


BAD_SUBSCRIPTIONS = {
    "no dest": ({"signatureToken": TOKEN, "stream": True}, 400, "dest:"),
    "ftp dest": ({"dest": "ftp://x/y", "signatureToken": TOKEN, "stream": True}, 400, "dest:"),
    "no host": ({"dest": "http:///x", "signatureToken": TOKEN, "stream": True}, 400, "dest:"),
    "no token": ({"dest": "http://x/y", "stream": True}, 400, "signatureToken:"),
    "short token": ({"dest": "http://x/y", "signatureToken": "k", "stream": True}, 400,
                    "signatureToken:"),
    "no stream": ({"dest": "http://x/y", "signatureToken": TOKEN}, 400, "stream:"),
    "schedule": ({"dest": "http://x/y", "signatureToken": TOKEN, "schedule": {"hour": "1"}},
                 400, "stream:"),
    "extra field": ({"dest": "http://x/y", "signatureToken": TOKEN, "stream": True, "x": 1},
                    400, "x:"),
    "bad start": ({"dest": "http://x/y", "signatureToken": TOKEN, "stream": True,
                   "initialRecordTime": "soon"}, 400, "initialRecordTime:"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_SUBSCRIPTIONS))
def test_bad_subscriptions_get_a_problem_naming_the_field(
    client: TestClient, partner: str, case: str
) -> None:
    """A subscription that cannot be made is a 400 problem whose detail names the field."""
    client.post("/epcis/queries", json={"name": "q", "query": {}}, headers=auth(partner))
    body, status, start = BAD_SUBSCRIPTIONS[case]
    response = client.post("/epcis/queries/q/subscriptions", json=body, headers=auth(partner))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(start)


def test_subscriptions_belong_to_their_owner_and_end_with_their_query(
    client: TestClient, seeded: Seeded, partner: str, keys: dict[str, str]
) -> None:
    """Staff cannot see or end a partner's subscription (404); the partner ends it with
    DELETE, and deleting the named query ends the others."""
    sid = _subscribe(client, partner, {})
    path = f"/epcis/queries/mine/subscriptions/{sid}"
    one = client.get(path, headers=auth(partner))
    assert one.status_code == 200 and one.json()["subscriptionID"] == sid
    assert TOKEN not in one.text
    staff = auth(keys["controller"])
    assert client.get(path, headers=staff).status_code == 404
    assert client.delete(path, headers=staff).status_code == 404
    assert client.get("/epcis/queries/mine/subscriptions", headers=staff).status_code == 404
    assert client.delete(path, headers=auth(partner)).status_code == 204
    assert client.delete(path, headers=auth(partner)).status_code == 404
    assert client.get(path, headers=auth(partner)).status_code == 404
    again = client.post(
        "/epcis/queries/mine/subscriptions",
        json={"dest": "https://example.org/e", "signatureToken": TOKEN, "stream": True},
        headers=auth(partner),
    )
    assert again.status_code == 201
    assert client.delete("/epcis/queries/mine", headers=auth(partner)).status_code == 204
    with psycopg.connect(seeded.dsn) as conn:
        left = conn.execute("SELECT count(*) FROM epcis_subscriptions").fetchone()
    assert left == (0,)


def test_deliveries_reach_a_real_receiver_signed_in_gs1_signature(
    client: TestClient, seeded: Seeded, partner: str
) -> None:
    """Through the real delivery engine, a subscription's document reaches a local HTTP
    receiver that first answers 500: the repeat carries the same idempotency key and
    body, and the GS1-Signature header verifies with the subscription's signatureToken
    (and fails with any other secret)."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    fail_first = lambda _request, seen: "500" if seen == 0 else "ok"  # noqa: E731
    with (
        webhook_receiver(fail_first) as receiver,
        running(
            EngineSettings(
                seeded.dsn,
                retry=RetryPolicy(0.1, 2.0, 0.5, 20.0),
                allow_private_targets=True,  # the receiver is on 127.0.0.1
            )
        ),
    ):
        sid = _subscribe(client, partner, {}, initialRecordTime=since, dest=receiver.url)
        wait_until(lambda: receiver.accepted_keys(), 20, "the delivery accepted")
    requests = receiver.requests
    assert [r.answer for r in requests] == ["500", "ok"]
    assert len({r.headers["idempotency-key"] for r in requests}) == 1
    assert requests[0].body == requests[1].body
    delivered = requests[-1]
    header = delivered.headers["gs1-signature"]
    webhooks.verify(TOKEN, header, delivered.body, now=delivered.wall)
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify("another-secret-0123456789", header, delivered.body, now=delivered.wall)
    doc = json.loads(delivered.body)
    assert doc["epcisBody"]["queryResults"]["subscriptionID"] == sid
    listed = client.get("/epcis/queries/mine/subscriptions", headers=auth(partner)).json()
    notified = datetime.fromisoformat(listed[0]["lastNotifiedAt"])
    assert abs(notified.timestamp() - delivered.wall) < 5
    events = doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert {e["epcList"][0] for e in events} == {f"urn:parceltrack:s10:{seeded.dispatched}"}


def test_a_staff_subscription_covers_every_account(
    client: TestClient, seeded: Seeded, partner: str, keys: dict[str, str]
) -> None:
    """A controller's subscription is not scoped: its delivery holds the reads of the
    partner's parcel and of parcels of no account alike."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    _subscribe(client, keys["controller"], {}, initialRecordTime=since)
    rows = wait_until(lambda: _queued(seeded.dsn), 15, "the staff subscription's delivery")
    body = json.loads(rows[0]["body"])
    events = body["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    parcels = {e["epcList"][0].removeprefix("urn:parceltrack:s10:") for e in events}
    assert parcels == {seeded.dispatched, seeded.in_sorting, seeded.on_conveyor, seeded.missorted}


def test_a_backlog_goes_out_in_batches_each_event_once(
    client: TestClient, seeded: Seeded, partner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batches of 2, the partner's 5 waiting events leave as 3 deliveries of 2, 2
    and 1 events, each with its own idempotency key, no event twice, none missing."""
    monkeypatch.setattr(epcis_feed, "BATCH", 2)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    _subscribe(client, partner, {}, initialRecordTime=since)

    def delivered() -> list[dict[str, Any]]:
        rows = _queued(seeded.dsn)
        return rows if sum(len(_events(r)) for r in rows) >= 5 else []

    rows = wait_until(delivered, 15, "5 events queued")
    assert [len(_events(r)) for r in rows] == [2, 2, 1]
    assert len({r["idempotency_key"] for r in rows}) == 3
    ids = [e["eventID"] for r in rows for e in _events(r)]
    ran = client.get("/epcis/queries/mine/events", headers=auth(partner)).json()
    expected = ran["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert sorted(ids) == sorted(e["eventID"] for e in expected) and len(set(ids)) == 5


def _events(row: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(row["body"])["epcisBody"]["queryResults"][
        "resultsBody"
    ]["eventList"]
    return events


def test_an_unreachable_database_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    """While the database cannot be reached, the feed retries every round but warns
    only at the first failure."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from composition.services import free_port

    async def a_while_without_database() -> None:
        dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, timeout=0.1, open=False)
        await pool.open(wait=False)
        task = asyncio.create_task(epcis_feed.run(pool, every_s=0.05))
        await asyncio.sleep(1.5)
        task.cancel()
        await pool.close()

    caplog.set_level(logging.DEBUG, logger="api.epcis_feed")
    asyncio.run(a_while_without_database())
    failures = [r for r in caplog.records if r.getMessage() == "EPCIS subscription round failed"]
    assert len(failures) >= 3, "too few rounds to show anything"
    assert [r.levelno for r in failures].count(logging.WARNING) == 1

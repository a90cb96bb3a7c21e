"""Customer subscriptions, unsubscribing, and the dead-letter admin endpoints."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from storage.outbound import Email, Outbound, enqueue
from tests.api.conftest import Seeded, auth


def test_webhook_subscription_returns_its_secret_once(client: TestClient, seeded: Seeded) -> None:
    """A webhook subscription answers 201 with a signing secret, the events and the link."""
    answer = client.post(
        f"/v1/parcels/{seeded.in_sorting}/subscriptions",
        json={"webhook_url": "https://shop.example/hooks/parcels?token=abc", "language": "zh-CN"},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["channel"] == "webhook" and body["language"] == "zh-CN"
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert "delayed" in body["events"] and "resolved" in body["events"]
    assert "/v1/unsubscribe/" in body["unsubscribe_url"]
    with psycopg.connect(seeded.dsn) as conn:
        stored = conn.execute("SELECT secret, language FROM customer_subscriptions").fetchone()
    assert stored == (body["secret"], "zh-CN")


@pytest.mark.parametrize(
    ("query", "header", "language"),
    [("zh-CN", None, "zh-CN"), (None, "zh-CN,zh;q=0.9,en;q=0.5", "zh-CN"), (None, None, "en")],
    ids=["query", "accept-language", "default"],
)
def test_email_subscription_language_from_request(
    client: TestClient, seeded: Seeded, query: str | None, header: str | None, language: str
) -> None:
    """Without a language in the body, ?lang= then Accept-Language then English decide."""
    answer = client.post(
        f"/v1/parcels/{seeded.dispatched}/subscriptions",
        params={"lang": query} if query else {},
        headers={"Accept-Language": header} if header else {},
        json={"email": "kunde@example.org"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["language"] == language
    assert answer.json()["secret"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not an address"}, "email"),
        ({"webhook_url": "ftp://example.org/x"}, "webhook_url"),
        ({"email": "a@example.org", "language": "fr"}, "language"),
        ({}, "exactly one"),
        ({"email": "a@example.org", "webhook_url": "https://example.org/x"}, "exactly one"),
    ],
    ids=["email", "url", "language", "neither", "both"],
)
def test_bad_subscription_is_422_naming_the_field(
    client: TestClient, seeded: Seeded, body: dict[str, str], field: str
) -> None:
    """Bad input is a 422 whose detail names what is wrong, never a 5xx."""
    answer = client.post(f"/v1/parcels/{seeded.in_sorting}/subscriptions", json=body)
    assert answer.status_code == 422
    assert field in answer.text


def test_unknown_or_invalid_parcel(client: TestClient, seeded: Seeded) -> None:
    """An unknown parcel is 404; a malformed number 422; the same target twice 409."""
    ok = {"email": "a@example.org"}
    assert client.post("/v1/parcels/EE123456785CN/subscriptions", json=ok).status_code == 404
    assert client.post("/v1/parcels/EE123456789CN/subscriptions", json=ok).status_code == 422
    path = f"/v1/parcels/{seeded.accepted}/subscriptions"
    assert client.post(path, json=ok).status_code == 201
    assert client.post(path, json=ok).status_code == 409


def test_unsubscribe_link_ends_it_and_cancels_queued_messages(
    client: TestClient, seeded: Seeded
) -> None:
    """The e-mail's link ends the subscription in its language and cancels what is queued."""
    body = client.post(
        f"/v1/parcels/{seeded.in_sorting}/subscriptions",
        json={"email": "a@example.org", "language": "zh-CN"},
    ).json()
    with psycopg.connect(seeded.dsn) as conn:
        enqueue(
            conn,
            Outbound(
                "a@example.org",
                f"subscription:{body['subscription_id']}",
                "k",
                "parcel.sorted",
                Email("s", "t", "h"),
            ),
        )
    path = "/v1/unsubscribe/" + body["unsubscribe_url"].rsplit("/", 1)[1]
    page = client.get(path)
    assert page.status_code == 200
    assert "已退订" in page.text and seeded.in_sorting in page.text
    again = client.post(path)
    assert again.json() == {"tracking_id": seeded.in_sorting, "unsubscribed": False, "cancelled": 0}
    with psycopg.connect(seeded.dsn) as conn:
        state = conn.execute("SELECT state FROM outbound_deliveries").fetchone()
        ended = conn.execute("SELECT unsubscribed_at FROM customer_subscriptions").fetchone()
    assert state == ("cancelled",) and ended is not None and ended[0] is not None
    assert client.get("/v1/unsubscribe/nosuchtoken123").status_code == 404


def test_one_click_unsubscribe_by_post(client: TestClient, seeded: Seeded) -> None:
    """POST to the link (RFC 8058 one-click) ends the subscription and says so."""
    body = client.post(
        f"/v1/parcels/{seeded.dispatched}/subscriptions", json={"email": "b@example.org"}
    ).json()
    path = "/v1/unsubscribe/" + body["unsubscribe_url"].rsplit("/", 1)[1]
    assert client.post(path).json()["unsubscribed"] is True
    # A new subscription to the same address is allowed once the old one ended.
    again = client.post(
        f"/v1/parcels/{seeded.dispatched}/subscriptions", json={"email": "b@example.org"}
    )
    assert again.status_code == 201


def _dead_letter(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        delivery = enqueue(
            conn,
            Outbound("c@example.org", "subscription:9", "k9", "kind", Email("s", "t", "h")),
        )
        conn.execute(
            "UPDATE outbound_deliveries SET state = 'dead', dead_at = now(), attempts = 30, "
            "last_error = 'HTTP 500', retry_from = now() - interval '25 hours'"
        )
    assert delivery is not None
    return delivery


def test_admin_lists_and_replays_dead_letters(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Admins see dead letters and replay one with a fresh retry window; others may not."""
    delivery = _dead_letter(seeded.dsn)
    assert client.get("/v1/admin/deliveries/dead").status_code == 401
    manager = auth(keys["manager"])
    assert client.get("/v1/admin/deliveries/dead", headers=manager).status_code == 403
    admin = auth(keys["admin"])
    dead = client.get("/v1/admin/deliveries/dead", headers=admin).json()
    assert [(d["delivery_id"], d["last_error"], d["attempts"]) for d in dead] == [
        (delivery, "HTTP 500", 30)
    ]
    replayed = client.post(f"/v1/admin/deliveries/{delivery}/replay", headers=admin)
    assert replayed.json() == {"delivery_id": delivery, "state": "pending"}
    assert client.get("/v1/admin/deliveries/dead", headers=admin).json() == []
    with psycopg.connect(seeded.dsn) as conn:
        row = conn.execute(
            "SELECT state, now() - retry_from < interval '1 minute' FROM outbound_deliveries"
        ).fetchone()
    assert row == ("pending", True)
    again = client.post(f"/v1/admin/deliveries/{delivery}/replay", headers=admin)
    assert again.status_code == 409 and "pending" in again.json()["detail"]
    assert client.post("/v1/admin/deliveries/999999/replay", headers=admin).status_code == 404

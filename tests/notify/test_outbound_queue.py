"""The enqueue contract of storage/outbound.py against a real PostgreSQL."""

from __future__ import annotations

import json

import psycopg
import pytest

from storage.outbound import Email, InvalidMessage, Outbound, Webhook, enqueue


def _webhook(key: str = "parcel.delayed:RR473124829GB:1") -> Outbound:
    return Outbound(
        target="http://127.0.0.1:9/hook?token=s3cret",
        subscriber="subscription:1",
        idempotency_key=key,
        kind="parcel.delayed",
        content=Webhook(body={"event": "delayed", "tracking_id": "RR473124829GB"}, secret="k"),
    )


def test_enqueue_is_part_of_the_callers_transaction(db_dsn: str) -> None:
    """A message queued in a transaction that rolls back is not queued at all."""
    with psycopg.connect(db_dsn) as conn:
        with conn.transaction():
            assert enqueue(conn, _webhook()) is not None
        try:
            with conn.transaction():
                enqueue(conn, _webhook("other-key"))
                raise RuntimeError("the caller's change failed")
        except RuntimeError:
            pass
        keys = [k for (k,) in conn.execute("SELECT idempotency_key FROM outbound_deliveries")]
    assert keys == ["parcel.delayed:RR473124829GB:1"]


def test_same_key_for_same_subscriber_is_queued_once(db_dsn: str) -> None:
    """Queuing the same (subscriber, idempotency key) twice keeps one message and returns None."""
    with psycopg.connect(db_dsn) as conn:
        first = enqueue(conn, _webhook())
        second = enqueue(conn, _webhook())
        conn.commit()
        rows = conn.execute("SELECT body, secret, channel FROM outbound_deliveries").fetchall()
    assert first is not None and second is None
    assert len(rows) == 1
    assert json.loads(rows[0][0]) == {"event": "delayed", "tracking_id": "RR473124829GB"}
    assert rows[0][1:] == ("k", "webhook")


def test_email_keeps_subject_text_html_and_unsubscribe(db_dsn: str) -> None:
    """An e-mail is stored with its subject, both parts and its unsubscribe link."""
    message = Outbound(
        target="someone@example.org",
        subscriber="subscription:2",
        idempotency_key="k1",
        kind="parcel.sorted",
        content=Email("Sorted", "plain", "<p>html</p>", "http://x/unsubscribe/t"),
    )
    with psycopg.connect(db_dsn) as conn:
        enqueue(conn, message)
        row = conn.execute(
            "SELECT channel, subject, body, html, unsubscribe_url FROM outbound_deliveries"
        ).fetchone()
    assert row == ("email", "Sorted", "plain", "<p>html</p>", "http://x/unsubscribe/t")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target": "not-an-address"}, "target"),
        ({"subscriber": " "}, "subscriber"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"kind": ""}, "kind"),
    ],
    ids=["target", "subscriber", "key", "kind"],
)
def test_invalid_message_names_the_field(changes: dict[str, str], field: str) -> None:
    """A message missing what it needs is refused with the field's name."""
    values = {
        "target": "a@example.org",
        "subscriber": "s",
        "idempotency_key": "k",
        "kind": "parcel.sorted",
        "content": Email("s", "t", "h"),
    }
    values.update(changes)
    with pytest.raises(InvalidMessage, match=field):
        Outbound(**values)  # type: ignore[arg-type]


def test_webhook_needs_http_url_and_secret() -> None:
    """A webhook to a non-HTTP target or without a secret is refused."""
    with pytest.raises(InvalidMessage, match="target"):
        Outbound("ftp://x", "s", "k", "kind", Webhook({}, "k"))
    with pytest.raises(InvalidMessage, match="secret"):
        Outbound("http://x", "s", "k", "kind", Webhook({}, ""))


def test_signature_header_must_be_a_header_name() -> None:
    """A signature header that is no HTTP header name is refused, naming the field."""
    with pytest.raises(InvalidMessage, match="signature_header"):
        Outbound("http://x", "s", "k", "kind", Webhook({}, "k", "Bad Header:"))

"""The outbound queue: e-mails and webhooks that must leave, durably, at least once.

Any stage queues a message with `enqueue` (or `enqueue_async`) *inside its own
transaction*, so the message exists exactly when the change that caused it is
committed. The delivery engine (`parceltrack notify`) sends it, retries it with
exponential backoff, and dead-letters it after the retry window.

Idempotency: a message is identified by (subscriber, idempotency key). Queuing the
same pair twice keeps the first and returns None, and every attempt carries the
key (webhook header `Idempotency-Key`, e-mail header `X-Parceltrack-Idempotency-Key`)
so a receiver can drop repeats. Callers derive the key from the event they report,
never from time or randomness, so a replayed event maps to the same key.

The queue holds personal data (addresses, URLs); logs never do (see notify/).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg

from parceltrack.errors import ParceltrackError
from parceltrack.webhooks import SIGNATURE_HEADER


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class InvalidMessage(ParceltrackError, ValueError):
    """A message that cannot be queued; the text names the field."""


@dataclass(frozen=True, slots=True)
class Email:
    """An e-mail in two parts. `unsubscribe_url` also goes into List-Unsubscribe."""

    subject: str
    text: str
    html: str
    unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    """A JSON body POSTed to the target, signed with `secret` (HMAC-SHA256, format in
    parceltrack/webhooks.py) in `signature_header` (EPCIS 2.0 wants GS1-Signature)."""

    body: dict[str, Any]
    secret: str
    signature_header: str = SIGNATURE_HEADER


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to one target.

    `subscriber` names who receives it for rate limits and the dead-letter view
    (for example `subscription:42`, `partner:acme`); `kind` is what it reports
    (`parcel.delayed`, `epcis.query`, `escalation`, ...)."""

    target: str
    subscriber: str
    idempotency_key: str
    kind: str
    content: Email | Webhook
    channel: Channel = field(init=False)

    def __post_init__(self) -> None:
        channel = Channel.EMAIL if isinstance(self.content, Email) else Channel.WEBHOOK
        object.__setattr__(self, "channel", channel)
        for name in ("target", "subscriber", "idempotency_key", "kind"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidMessage(f"{name}: must be a non-empty string")
            if len(value) > 2000:
                raise InvalidMessage(f"{name}: longer than 2000 characters")
        if channel is Channel.EMAIL and "@" not in self.target:
            raise InvalidMessage("target: an e-mail message needs an e-mail address")
        if channel is Channel.WEBHOOK:
            if not self.target.startswith(("http://", "https://")):
                raise InvalidMessage("target: a webhook needs an http:// or https:// URL")
            assert isinstance(self.content, Webhook)
            if not self.content.secret:
                raise InvalidMessage("content.secret: a webhook needs a signing secret")
            if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", self.content.signature_header):
                raise InvalidMessage("content.signature_header: not an HTTP header name")


_INSERT = """
    INSERT INTO outbound_deliveries
        (channel, target, subscriber, idempotency_key, kind, subject, body, html,
         unsubscribe_url, secret, signature_header)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (subscriber, idempotency_key) DO NOTHING
    RETURNING delivery_id
"""


def _row(message: Outbound) -> tuple[Any, ...]:
    content = message.content
    if isinstance(content, Email):
        subject: str | None = content.subject
        body = content.text
        html: str | None = content.html
        unsubscribe, secret, header = content.unsubscribe_url, None, None
    else:
        # Serialised once, here: every attempt sends (and signs) these same bytes.
        subject, html, unsubscribe = None, None, None
        body = json.dumps(content.body, separators=(",", ":"), ensure_ascii=False)
        secret = content.secret
        header = None if content.signature_header == SIGNATURE_HEADER else content.signature_header
    return (
        message.channel.value,
        message.target,
        message.subscriber,
        message.idempotency_key,
        message.kind,
        subject,
        body,
        html,
        unsubscribe,
        secret,
        header,
    )


def enqueue(conn: psycopg.Connection[Any], message: Outbound) -> int | None:
    """Queue `message` in the caller's transaction; its delivery id, or None when the
    same (subscriber, idempotency key) is already queued (or was delivered)."""
    row = conn.execute(_INSERT, _row(message)).fetchone()
    return None if row is None else int(row[0])


async def enqueue_async(conn: psycopg.AsyncConnection[Any], message: Outbound) -> int | None:
    """`enqueue` for an async connection (the API's pool)."""
    cur = await conn.execute(_INSERT, _row(message))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


# -- the dead-letter list and replay (admins, through the API) ----------------------

DEAD_COLUMNS = (
    "delivery_id, channel, target, subscriber, idempotency_key, kind, attempts, "
    "created_at, retry_from, dead_at, last_error"
)


async def dead_letters(
    conn: psycopg.AsyncConnection[Any], limit: int, subscriber: str | None = None
) -> list[dict[str, Any]]:
    """Dead letters, newest first, optionally of one subscriber."""
    cur = await conn.execute(
        f"SELECT {DEAD_COLUMNS} FROM outbound_deliveries WHERE state = 'dead' "
        "AND (%s::text IS NULL OR subscriber = %s) ORDER BY dead_at DESC, delivery_id DESC "
        "LIMIT %s",
        (subscriber, subscriber, limit),
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def replay(conn: psycopg.AsyncConnection[Any], delivery_id: int) -> str | None:
    """Send a dead letter again with a fresh retry window; the state it was in before
    (only 'dead' is replayed), or None when there is no such delivery."""
    cur = await conn.execute(
        "UPDATE outbound_deliveries SET state = 'pending', next_attempt_at = now(), "
        "retry_from = now(), dead_at = NULL WHERE delivery_id = %s AND state = 'dead' "
        "RETURNING delivery_id",
        (delivery_id,),
    )
    if await cur.fetchone() is not None:
        return "dead"
    cur = await conn.execute(
        "SELECT state FROM outbound_deliveries WHERE delivery_id = %s", (delivery_id,)
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def cancel_pending(conn: psycopg.AsyncConnection[Any], subscriber: str) -> int:
    """Cancel what is still queued for a subscriber (it unsubscribed); how many."""
    cur = await conn.execute(
        "UPDATE outbound_deliveries SET state = 'cancelled', last_error = 'unsubscribed' "
        "WHERE subscriber = %s AND state = 'pending'",
        (subscriber,),
    )
    return cur.rowcount

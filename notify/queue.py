"""The engine's side of the outbound queue: claim due messages, record outcomes.

Claiming leases a message (its next_attempt_at moves a lease ahead) and logs the
attempt in the same transaction, so two engines never send one message at once, a
crashed engine's messages come back when the lease ends, and the rate limit counts
attempts in flight too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from notify.policy import RateLimit, RetryPolicy, admit
from storage.outbound import Channel


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed message and the attempt being made."""

    delivery_id: int
    attempt_id: int
    channel: Channel
    target: str
    subscriber: str
    idempotency_key: str
    kind: str
    subject: str | None
    body: str
    html: str | None
    unsubscribe_url: str | None
    secret: str | None
    attempts: int  # including this one
    retry_from: datetime


_COLUMNS = (
    "delivery_id, channel, target, subscriber, idempotency_key, kind, subject, body, html, "
    "unsubscribe_url, secret, attempts, retry_from"
)


def claim(
    conn: psycopg.Connection[Any], batch: int, lease_s: float, limit: RateLimit
) -> list[Delivery]:
    """Lease up to `batch` due messages, oldest first, within each subscriber's limit;
    the ones over a limit wait until the subscriber's window has room."""
    with conn.transaction():
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbound_deliveries "
            "WHERE state = 'pending' AND next_attempt_at <= now() "
            "ORDER BY next_attempt_at, delivery_id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall()
        if not rows:
            return []
        subscribers = sorted({str(r[3]) for r in rows})
        used = dict(
            conn.execute(
                "SELECT subscriber, count(*)::int FROM outbound_attempts "
                "WHERE subscriber = ANY(%s) AND at > now() - make_interval(secs => %s) "
                "GROUP BY subscriber",
                (subscribers, limit.window_s),
            ).fetchall()
        )
        send, defer = admit(rows, lambda r: str(r[3]), used, limit)
        if defer:
            # A fraction of the window: room opens as the oldest attempts age out.
            conn.execute(
                "UPDATE outbound_deliveries SET next_attempt_at = now() "
                "+ make_interval(secs => %s) WHERE delivery_id = ANY(%s)",
                (limit.window_s / max(1, limit.per_window), [r[0] for r in defer]),
            )
        claimed: list[Delivery] = []
        for r in send:
            conn.execute(
                "UPDATE outbound_deliveries SET attempts = attempts + 1, "
                "next_attempt_at = now() + make_interval(secs => %s) WHERE delivery_id = %s",
                (lease_s, r[0]),
            )
            attempt = conn.execute(
                "INSERT INTO outbound_attempts (delivery_id, subscriber, ok, detail) "
                "VALUES (%s, %s, false, 'in flight') RETURNING attempt_id",
                (r[0], r[3]),
            ).fetchone()
            assert attempt is not None
            claimed.append(
                Delivery(
                    delivery_id=int(r[0]),
                    attempt_id=int(attempt[0]),
                    channel=Channel(r[1]),
                    target=str(r[2]),
                    subscriber=str(r[3]),
                    idempotency_key=str(r[4]),
                    kind=str(r[5]),
                    subject=r[6],
                    body=str(r[7]),
                    html=r[8],
                    unsubscribe_url=r[9],
                    secret=r[10],
                    attempts=int(r[11]) + 1,
                    retry_from=r[12],
                )
            )
    return claimed


def seconds_to_next(conn: psycopg.Connection[Any]) -> float:
    """Seconds until the next pending message falls due (infinity when none waits)."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 "
        "FROM outbound_deliveries WHERE state = 'pending'"
    ).fetchone()
    return float("inf") if row is None or row[0] is None else float(row[0])


def delivered(conn: psycopg.Connection[Any], delivery: Delivery, detail: str) -> None:
    """Record a successful attempt: the message is done."""
    with conn.transaction():
        _attempt(conn, delivery, True, detail)
        conn.execute(
            "UPDATE outbound_deliveries SET state = 'delivered', delivered_at = now(), "
            "last_error = NULL WHERE delivery_id = %s AND state = 'pending'",
            (delivery.delivery_id,),
        )


def failed(
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    detail: str,
    policy: RetryPolicy,
    now: datetime,
) -> datetime | None:
    """Record a failed attempt; when it is tried next, or None: now a dead letter."""
    retry_at = policy.next_attempt(delivery.retry_from, now, delivery.attempts)
    with conn.transaction():
        _attempt(conn, delivery, False, detail)
        if retry_at is None:
            conn.execute(
                "UPDATE outbound_deliveries SET state = 'dead', dead_at = now(), "
                "last_error = %s WHERE delivery_id = %s AND state = 'pending'",
                (detail, delivery.delivery_id),
            )
        else:
            conn.execute(
                "UPDATE outbound_deliveries SET next_attempt_at = %s, last_error = %s "
                "WHERE delivery_id = %s AND state = 'pending'",
                (retry_at, detail, delivery.delivery_id),
            )
    return retry_at


def _attempt(conn: psycopg.Connection[Any], delivery: Delivery, ok: bool, detail: str) -> None:
    conn.execute(
        "UPDATE outbound_attempts SET ok = %s, detail = %s WHERE attempt_id = %s",
        (ok, detail[:500], delivery.attempt_id),
    )
